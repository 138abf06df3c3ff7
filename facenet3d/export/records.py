"""The content of ``params.json``, built in one place for the torch path and the torch-free runtime.

``facenet3d reconstruct`` (:meth:`facenet3d.api.FaceReconstruction.params_record`) and ``infer/``
both call :func:`params_record` with numpy arrays, so the two files cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facenet3d.camera_math import CROP_FOCAL_PER_PX, ImageCamera, matrix_to_euler
from facenet3d.export.arkit import blendshape_record

#: How ``params.json`` states its camera convention.
CAMERA_CONVENTION = ("OpenGL camera looking down -z, +y up; pixel origin top-left, centres at +0.5; "
                     "u = cx + fx X / -Z, v = cy - fy Y / -Z; x_cam = R x_model + t (mm)")


def params_record(params: Mapping[str, np.ndarray], *, rotation: np.ndarray, translation: np.ndarray,
                  camera: ImageCamera, crop_size: int, crop_forward: np.ndarray, detection_box: np.ndarray,
                  detection_score: float, refine: str, seconds: Mapping[str, float],
                  model_name: str = "", expression_names: Sequence[str] = ()) -> dict:
    """The JSON-able ``params.json`` content of one face.

    Args:
        params: one face's :class:`~facenet3d.params.FaceParams` fields without the batch axis,
            in the aligned crop's camera: ``identity (Ki,)``, ``expression (Ke,)``, ``albedo (Ka,)``,
            ``rotation (6,)``, ``translation (3,)`` mm, ``sh (9, 3)``, ``specular (1,)``,
            ``roughness (1,)``.
        rotation: ``(3, 3)`` model -> photo camera (:func:`~facenet3d.camera_math.photo_pose`).
        translation: ``(3,)`` mm, photo camera frame.
        camera: the photo's camera.
        crop_size: side of the aligned crop ``crop_forward`` maps to, px.
        crop_forward: ``(2, 3)`` photo px -> crop px.
        detection_box: ``(4,)`` ``x0, y0, x1, y1`` photo px.
        detection_score: detector confidence.
        refine: ``"none"``, ``"fast"``, ``"full"`` or a preset path.
        seconds: time per stage.
        model_name: the face model's name or spec.
        expression_names: the model's names of its expression modes (ICT-FaceKit: ARKit
            blendshape names); when given, ``expression_by_name`` maps each to its
            coefficient (0 for modes without one), beside the raw ``expression`` list, and
            when they are ARKit blendshapes, ``blendshapes`` holds the 52 ARKit weights by
            ARKit name (:func:`facenet3d.export.arkit.blendshape_record`; head pose is
            ``rotation_ypr_deg``).
    """
    def values(name: str) -> list:
        return np.asarray(params[name]).tolist()

    ypr = matrix_to_euler(np.asarray(rotation, np.float64)).tolist()
    named = {}
    if expression_names:
        named = {"expression_by_name": expression_by_name(params["expression"], expression_names)}
        arkit = blendshape_record(params["expression"], expression_names)
        if arkit is not None:
            named["blendshapes"] = arkit
    return {
        "face_model": model_name,
        "identity": values("identity"),
        "expression": values("expression"),
        **named,
        "albedo": values("albedo"),
        "sh": values("sh"),
        "specular_scale": float(np.asarray(params["specular"]).reshape(-1)[0]),
        "roughness": float(np.asarray(params["roughness"]).reshape(-1)[0]),
        "rotation_ypr_deg": [round(v, 4) for v in ypr],
        "rotation_matrix": np.round(np.asarray(rotation, np.float64), 6).tolist(),
        "translation_mm": np.round(np.asarray(translation, np.float64), 4).tolist(),
        "camera": {
            "focal_px": [float(v) for v in camera.focal],
            "principal_px": [float(v) for v in camera.principal],
            "image_size_hw": [int(v) for v in camera.image_size],
            "convention": CAMERA_CONVENTION,
        },
        "crop": {"size": int(crop_size), "forward": np.round(np.asarray(crop_forward, np.float64), 8).tolist(),
                 "focal_px": CROP_FOCAL_PER_PX * crop_size,
                 "rotation_6d": values("rotation"), "translation_mm": values("translation")},
        "detection": {"box": np.round(np.asarray(detection_box, np.float64), 2).tolist(),
                      "score": float(detection_score)},
        "refine": refine,
        "seconds": {k: round(float(v), 4) for k, v in seconds.items()},
    }


def expression_by_name(expression: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Expression coefficients keyed by mode name, in the model's order.

    Args:
        expression: ``(Ke',)`` coefficients, ``Ke' <= len(names)`` (the missing trailing ones are 0,
            as in :meth:`~facenet3d.facemodel.MorphableModel.decode`).
        names: the ``Ke`` mode names.

    Raises:
        ValueError: more coefficients than names.
    """
    values = np.asarray(expression, np.float64).reshape(-1)
    if len(values) > len(names):
        raise ValueError(f"{len(values)} expression coefficients for {len(names)} named modes")
    return {str(name): float(values[k]) if k < len(values) else 0.0 for k, name in enumerate(names)}
