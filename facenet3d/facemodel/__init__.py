"""Morphable face models: the container, the native format and loaders for public formats."""

from facenet3d.facemodel.lbs import axis_angle_to_matrix, lbs
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.facemodel.native import load_native, read_face_model_arrays, save_face_model
from facenet3d.facemodel.registry import (
    available_formats,
    default_model_path,
    load_face_model,
    register_format,
)

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
