"""The face-model builder: the open default face model from photos (``python -m facenet3d.train.build_face_model``)."""
