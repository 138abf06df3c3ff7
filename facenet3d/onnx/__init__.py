"""ONNX export of the regressor with the face model's decoding, for the torch-free runtime (``infer/``).

- :mod:`facenet3d.onnx.metadata` (no torch): the graph's inputs, outputs and metadata record,
  :class:`OnnxModelInfo`, and the numpy face-model fingerprint;
- :mod:`facenet3d.onnx.export` (torch): :class:`FaceGraph` and :func:`export_onnx`, imported on
  first use so that the runtime can import this package without torch;
- ``facenet3d export-onnx`` (:mod:`facenet3d.onnx.commands`).
"""

from importlib import import_module

from facenet3d.onnx.metadata import (
    DECODED_OUTPUTS,
    FORMAT_NAME,
    FORMAT_VERSION,
    INPUT_NAME,
    OUTPUT_NAMES,
    PARAM_OUTPUTS,
    OnnxModelInfo,
    face_model_fingerprint,
)

_TORCH_NAMES = ("DEFAULT_OPSET", "FaceGraph", "export_onnx", "verify_graph", "vertex_albedo_space")


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(import_module("facenet3d.onnx.export"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DECODED_OUTPUTS",
    "DEFAULT_OPSET",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "PARAM_OUTPUTS",
    "FaceGraph",
    "OnnxModelInfo",
    "export_onnx",
    "face_model_fingerprint",
    "verify_graph",
    "vertex_albedo_space",
]
