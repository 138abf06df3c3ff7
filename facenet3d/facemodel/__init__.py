"""Morphable face models: the container, the native format and loaders for public formats.

The numpy side (:class:`FaceModelArrays`, reading and writing the native ``.npz``, the paths of
shipped models) imports without torch, so the torch-free runtime (``infer/``) can read face
models; the torch side (:class:`MorphableModel`, :func:`load_face_model`, skinning) is imported
on first use.
"""

from importlib import import_module

from facenet3d.facemodel.arrays import FaceModelArrays
from facenet3d.facemodel.native import load_native, read_face_model_arrays, save_face_model
from facenet3d.facemodel.registry import (
    available_formats,
    default_model_path,
    load_face_model,
    register_format,
)

# name -> module of the names that need torch.
_TORCH_NAMES = {
    "MorphableModel": "facenet3d.facemodel.model",
    "axis_angle_to_matrix": "facenet3d.facemodel.lbs",
    "lbs": "facenet3d.facemodel.lbs",
}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FaceModelArrays",
    "MorphableModel",
    "available_formats",
    "axis_angle_to_matrix",
    "default_model_path",
    "lbs",
    "load_face_model",
    "load_native",
    "read_face_model_arrays",
    "register_format",
    "save_face_model",
]
