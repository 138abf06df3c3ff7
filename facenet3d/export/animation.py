"""A clip's face animation as files animators read (:class:`~facenet3d.track.FaceTrack` in):

* ``frames.jsonl`` records (:func:`frame_record`): per frame with a face, the ARKit
  ``blendshapes``, head pose, eye rotations, the model's expression coefficients and the clip's
  identity (the caller adds its own fields);
* ``animation.csv`` in **Live Link Face's layout** (:func:`write_live_link_csv`), the CSV that
  Epic's iPhone app exports and that Unreal's LiveLinkFaceImporter, the Blender add-ons and
  other public importers read: ``Timecode,BlendShapeCount``, the 52 ARKit weights in the app's
  column order (:data:`LIVE_LINK_COLUMNS`: Apple's order except ``JawRight, JawLeft`` and
  ``MouthRight, MouthLeft``), then ``HeadYaw, HeadPitch, HeadRoll`` and left / right eye
  ``Yaw, Pitch, Roll`` (:data:`LIVE_LINK_ROTATIONS`), in radians; ``BlendShapeCount`` is 61;
  ``Timecode`` is ``HH:MM:SS:FF.mmm`` (frame ``FF`` at the clip's rate, ``.mmm`` its fraction);
* ``animation.glb`` (:func:`write_animated_glb`): the head mesh of the clip's identity with the
  expression modes as morph targets, a ``weights`` animation (one keyframe per frame, LINEAR)
  and the head rotation on the ``head`` node (:class:`~facenet3d.export.gltf.GltfAnimation`).

Head pose is the model -> camera rotation as yaw, pitch, roll
(:func:`~facenet3d.camera_math.matrix_to_euler`: ``R = R_y R_x R_z``, yaw positive towards the
subject's left); eye rotations come from the ``eyeLook*`` blendshapes
(:func:`~facenet3d.export.arkit.eye_rotations`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from facenet3d.atomic import write_text
from facenet3d.camera_math import matrix_to_euler
from facenet3d.export.arkit import ARKIT_NAMES, blendshape_record, eye_rotations, has_blendshapes, to_arkit
from facenet3d.export.gltf import GltfAnimation, write_glb
from facenet3d.export.mesh import mesh_from_face_model
from facenet3d.track import FaceTrack

#: ARKit names in the column order of Live Link Face's CSV.
LIVE_LINK_ORDER: tuple[str, ...] = tuple(
    {"jawLeft": "jawRight", "jawRight": "jawLeft", "mouthLeft": "mouthRight", "mouthRight": "mouthLeft"}.get(n, n)
    for n in ARKIT_NAMES)
#: The 52 blendshape column names of the CSV (PascalCase, ``Left`` / ``Right`` spelled out).
LIVE_LINK_COLUMNS: tuple[str, ...] = tuple(n[0].upper() + n[1:] for n in LIVE_LINK_ORDER)
#: The rotation columns after the blendshapes, radians.
LIVE_LINK_ROTATIONS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                       "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LIVE_LINK_HEADER = ("Timecode", "BlendShapeCount", *LIVE_LINK_COLUMNS, *LIVE_LINK_ROTATIONS)
#: Decimals written for weights and angles.
DECIMALS = 6


def live_link_timecode(seconds: float, fps: float) -> str:
    """``HH:MM:SS:FF.mmm``: the frame ``FF`` within the second at ``fps`` and its thousandths."""
    frames = round(float(seconds) * fps, 3)
    whole = math.floor(frames)
    sub = int(round((frames - whole) * 1000))
    if sub == 1000:
        whole, sub = whole + 1, 0
    per_second = max(int(round(fps)), 1)
    s, ff = divmod(whole, per_second)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{sub:03d}"


def track_blendshapes(track: FaceTrack) -> np.ndarray:
    """``(N, 52)`` ARKit weights of a track, rounded as written (raises
    :class:`~facenet3d.export.arkit.NoBlendshapesError` for models without them)."""
    return np.round(to_arkit(track.expression, track.expression_names), DECIMALS)


def track_rotations(track: FaceTrack) -> np.ndarray:
    """``(N, 9)`` degrees: head yaw, pitch, roll, then the eyes' (:func:`eye_rotations`), rounded."""
    head = matrix_to_euler(track.rotation)
    eyes = eye_rotations(to_arkit(track.expression, track.expression_names)) if has_blendshapes(
        track.expression_names) else np.zeros((len(track), 6))
    return np.round(np.concatenate([head, eyes], 1), 4)


def frame_record(track: FaceTrack, i: int) -> dict[str, Any]:
    """The JSON Lines record of the track's ``i``-th frame: ``frame``, ``time_s``, ``timecode``,
    ``blendshapes`` (ARKit name -> weight; absent for models without ARKit names),
    ``head_rotation_ypr_deg``, ``eye_rotation_deg`` (``left``/``right`` yaw, pitch, roll),
    ``expression``, ``rotation_matrix``, ``translation_mm`` and ``identity`` (the clip's)."""
    rot = track_rotations(_slice(track, i))[0]
    record: dict[str, Any] = {"frame": int(track.frames[i]), "time_s": round(float(track.times[i]), 6),
                              "timecode": live_link_timecode(track.times[i], track.fps)}
    shapes = blendshape_record(track.expression[i], track.expression_names)
    if shapes is not None:
        record["blendshapes"] = shapes
    record.update({
        "head_rotation_ypr_deg": rot[:3].tolist(),
        "eye_rotation_deg": {"left": rot[3:6].tolist(), "right": rot[6:].tolist()},
        "expression": np.round(track.expression[i], DECIMALS).tolist(),
        "rotation_matrix": np.round(track.rotation[i], 6).tolist(),
        "translation_mm": np.round(track.translation[i], 4).tolist(),
        "identity": np.round(track.identity, DECIMALS).tolist(),
    })
    return record


def _slice(track: FaceTrack, i: int) -> FaceTrack:
    return replace(track, frames=track.frames[i:i + 1], times=track.times[i:i + 1],
                   expression=track.expression[i:i + 1], rotation=track.rotation[i:i + 1],
                   translation=track.translation[i:i + 1])


def write_live_link_csv(track: FaceTrack, path: str | Path) -> Path:
    """Write the track as a Live Link Face CSV (see the module docstring), atomically.

    Raises:
        NoBlendshapesError: the track's model has no ARKit blendshapes.
    """
    weights = track_blendshapes(track)
    order = [ARKIT_NAMES.index(n) for n in LIVE_LINK_ORDER]
    rotations = np.deg2rad(track_rotations(track))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LIVE_LINK_HEADER)
    count = len(LIVE_LINK_COLUMNS) + len(LIVE_LINK_ROTATIONS)
    for i in range(len(track)):
        values = [*weights[i, order], *rotations[i]]
        writer.writerow([live_link_timecode(track.times[i], track.fps), count,
                         *(f"{v:.{DECIMALS}f}" for v in values)])
    return write_text(out.getvalue(), path)


def read_live_link_csv(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """A Live Link Face CSV: ``(timecodes, {column: (N,) float64})``, ARKit names in camelCase
    (``EyeBlinkLeft`` -> ``eyeBlinkLeft``), rotation columns as written."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    columns = {}
    for k, name in enumerate(header[2:], start=2):
        key = name if name in LIVE_LINK_ROTATIONS else name[0].lower() + name[1:]
        columns[key] = np.array([float(r[k]) for r in body])
    return [r[0] for r in body], columns


def write_animated_glb(track: FaceTrack, model: Any, neutral_vertices: np.ndarray, path: str | Path,
                       **maps: Any) -> Path:
    """Write the track as an animated GLB (see the module docstring), atomically.

    Args:
        track: the face track.
        model: its face model (a ``MorphableModel`` or ``FaceModelArrays``).
        neutral_vertices: ``(V, 3)`` mm, the clip's identity with no expression.
        path: destination ``.glb``.
        maps: texture maps for :func:`~facenet3d.export.mesh.mesh_from_face_model` (default: the
            model's mean albedo).
    """
    mesh = mesh_from_face_model(model, neutral_vertices, morph_targets=True, **maps)
    k = len(mesh.morph_names)
    weights = np.zeros((len(track), k), np.float32)
    weights[:, : track.expression.shape[1]] = np.round(track.expression, DECIMALS)
    return write_glb(mesh, path, animation=GltfAnimation(times=track.times, weights=weights,
                                                         rotations=track.rotation, name="face"))
