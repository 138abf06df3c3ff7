"""The torch-free runtime: ONNX Runtime + numpy + OpenCV + MediaPipe.

Reconstructs faces with a graph exported by ``facenet3d export-onnx`` and writes what
``facenet3d reconstruct`` writes, without importing PyTorch:

- :mod:`facenet3d.infer.session`: the ONNX Runtime session (CUDA when available, CPU threads configurable);
- :mod:`facenet3d.infer.pipeline`: numpy pre- and post-processing (crops in, placed faces and files out);
- :mod:`facenet3d.export.software_render`: numpy rasterisation and shading of the overlays;
- :mod:`facenet3d.infer.batch`: photos and folders in batches, resumable, failures listed;
- :mod:`facenet3d.infer.inputs`: list files and Parquet manifests of photo paths;
- :mod:`facenet3d.infer.ray_engine`: the same stages on Ray Data (``--engine ray``; the ``ray`` extra);
- :mod:`facenet3d.infer.table`: the Parquet face table (``--table``) and failures table;
- :mod:`facenet3d.infer.video`: videos and frame folders, one-euro smoothing, JSON Lines, overlay video;
- ``python -m facenet3d.infer INPUT... -o OUT --onnx model.onnx`` (:mod:`facenet3d.infer.__main__`).
"""
