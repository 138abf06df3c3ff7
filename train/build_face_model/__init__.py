"""The face-model builder: the open default face model from photos (``python -m train.build_face_model``)."""
