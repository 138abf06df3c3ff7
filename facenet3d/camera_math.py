"""Camera and pose arithmetic in numpy, shared by the torch path and the torch-free runtime.

The aligned-crop camera (:data:`CROP_FOCAL_PER_PX`), the original photo's camera
(:class:`ImageCamera`, :func:`photo_pose`), pinhole projection, and numpy twins of the rotation
conversions of :mod:`facenet3d.render.pose` (same definitions; tests hold them equal). Nothing
here imports torch: ``infer/`` uses it to write the same ``params.json`` and landmarks as
``facenet3d reconstruct``.

Conventions: camera at the origin looking down ``-z``, ``+y`` up (OpenGL); pixels with the
origin top-left and pixel centres at ``+0.5``; ``u = cx + fx X / -Z``, ``v = cy - fy Y / -Z``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Focal length of an aligned crop's camera in pixels per pixel of crop size (1015 px for a
#: 224 px crop, as in Deep3DFaceRecon; see :mod:`facenet3d.decode`).
CROP_FOCAL_PER_PX = 1015.0 / 224.0


@dataclass
class ImageCamera:
    """The pinhole camera of the original photo (pixels; see :mod:`facenet3d.render.camera`)."""

    focal: tuple[float, float]
    principal: tuple[float, float]
    image_size: tuple[int, int]  # (H, W)


def photo_pose(rotation: np.ndarray, translation: np.ndarray, forward: np.ndarray, crop_size: int
               ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[float, float]]:
    """Turn a pose in an aligned crop's camera into the original photo's camera.

    The crop is a similarity ``p_crop = s R2(theta) p + t`` of the photo. Mapping the crop's
    projection back through it equals projecting with focal ``f / s`` and principal point
    ``A^-1(c)`` after rotating the scene by ``theta`` about the optical axis. The result does not
    depend on the crop size as long as ``forward`` maps to a crop of ``crop_size`` pixels (the
    crop camera's focal length scales with the crop).

    Args:
        rotation: ``(3, 3)`` model-to-crop-camera rotation.
        translation: ``(3,)`` mm, crop camera frame.
        forward: ``(2, 3)`` photo px -> crop px similarity.
        crop_size: side of the crop ``forward`` maps to, px.

    Returns:
        ``(R (3, 3), t (3,), focal (fx, fy), principal (cx, cy))`` of the photo camera.
    """
    a = np.asarray(forward, np.float64)
    s = math.sqrt(abs(np.linalg.det(a[:, :2])))
    theta = math.atan2(a[1, 0], a[0, 0])
    c, sn = math.cos(theta), math.sin(theta)
    rz = np.array([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]])
    centre = np.array([crop_size / 2.0, crop_size / 2.0])
    principal = np.linalg.solve(a[:, :2], centre - a[:, 2])
    f = CROP_FOCAL_PER_PX * crop_size / s
    return rz @ rotation, rz @ translation, (f, f), (float(principal[0]), float(principal[1]))


def project_points(points: np.ndarray, focal: tuple[float, float], principal: tuple[float, float]) -> np.ndarray:
    """Pinhole projection of camera-frame points.

    Args:
        points: ``(..., 3)`` mm in the camera frame (``z < 0`` in front of the camera).
        focal: ``(fx, fy)`` px.
        principal: ``(cx, cy)`` px.

    Returns:
        ``(..., 2)`` pixels ``(u, v)``, in the dtype of ``points`` (float64 for integers).
    """
    p = np.asarray(points)
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    depth = -p[..., 2]
    return np.stack([principal[0] + focal[0] * p[..., 0] / depth,
                     principal[1] - focal[1] * p[..., 1] / depth], -1)


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotations -> ``(..., 3)`` ``(yaw, pitch, roll)`` degrees, ``R = R_y R_x R_z``.

    The numpy twin of :func:`facenet3d.render.pose.matrix_to_euler` (pitch in ``[-90, 90]``; at
    gimbal lock yaw takes the whole rotation).
    """
    m = np.asarray(matrix, np.float64)
    pitch = np.arcsin(np.clip(-m[..., 1, 2], -1.0, 1.0))
    cos_pitch = np.sqrt(m[..., 1, 0] ** 2 + m[..., 1, 1] ** 2)
    locked = cos_pitch < 1e-6
    yaw = np.where(locked, np.arctan2(-m[..., 2, 0], m[..., 0, 0]), np.arctan2(m[..., 0, 2], m[..., 2, 2]))
    roll = np.where(locked, 0.0, np.arctan2(m[..., 1, 0], m[..., 1, 1]))
    return np.rad2deg(np.stack([yaw, pitch, roll], -1))


def rotation_6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """``(..., 6)`` first two columns of ``R`` (up to normalisation) -> ``(..., 3, 3)`` by Gram-Schmidt.

    The numpy twin of :func:`facenet3d.render.pose.rotation_6d_to_matrix`.
    """
    d6 = np.asarray(d6)
    if d6.dtype.kind != "f":
        d6 = d6.astype(np.float64)

    def normalise(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)

    b1 = normalise(d6[..., :3])
    a2 = d6[..., 3:]
    b2 = normalise(a2 - (b1 * a2).sum(-1, keepdims=True) * b1)
    return np.stack([b1, b2, np.cross(b1, b2)], -1)


def matrix_to_rotation_6d(matrix: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two columns, column after column."""
    m = np.asarray(matrix)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], -1)
