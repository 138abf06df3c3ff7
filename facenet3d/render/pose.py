"""Rotation parameterisations and the rigid pose that takes model-frame vertices into the camera.

Conventions (right-handed, +y up, +z out of the face, camera looking down -z):

- **Euler angles** ``(yaw, pitch, roll)`` in degrees, for people: ``R = R_y(yaw) R_x(pitch) R_z(roll)``
  acting on column vectors (intrinsic y-x'-z'' order). Every angle is a right-handed rotation
  about its axis: positive yaw (about +y) turns the face's +z towards +x, the subject's left and
  the image's right; positive pitch (about +x) turns +z towards -y, the head looking down;
  positive roll (about +z) turns +x towards +y, counter-clockwise as the camera sees it.
  ``matrix_to_euler`` inverts this for ``|pitch| < 90`` degrees; at ``|pitch| = 90`` (gimbal
  lock) yaw and roll are not separable and yaw takes the whole rotation.
- **6D** (Zhou et al., "On the continuity of rotation representations in neural networks",
  CVPR 2019): the first two *columns* of ``R``, ``(r11, r21, r31, r12, r22, r32)``; any 6 numbers
  map to a rotation by Gram-Schmidt, continuously, which is what a network should regress.
  (PyTorch3D stores the first two rows instead, i.e. the 6D form of ``R^T``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _axis_rotation(angle: torch.Tensor, axis: str) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "x": (one, zero, zero, zero, c, -s, zero, s, c),
        "y": (c, zero, s, zero, one, zero, -s, zero, c),
        "z": (c, -s, zero, s, c, zero, zero, zero, one),
    }[axis]
    return torch.stack(rows, -1).reshape(*angle.shape, 3, 3)


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from Euler angles.

    Args:
        angles: ``(..., 3)`` ``(yaw, pitch, roll)`` in degrees (see the module docstring).

    Returns:
        ``(..., 3, 3)`` ``R = R_y(yaw) R_x(pitch) R_z(roll)``.

    Example:
        >>> nose = torch.tensor([0.0, 0.0, 1.0])
        >>> (euler_to_matrix(torch.tensor([90.0, 0.0, 0.0])) @ nose).round(decimals=6)  # +z -> +x
        tensor([1., 0., -0.])
    """
    yaw, pitch, roll = torch.deg2rad(angles).unbind(-1)
    return _axis_rotation(yaw, "y") @ _axis_rotation(pitch, "x") @ _axis_rotation(roll, "z")


def matrix_to_euler(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix`.

    Args:
        matrix: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 3)`` ``(yaw, pitch, roll)`` in degrees, pitch in ``[-90, 90]``, yaw and roll in
        ``(-180, 180]``.
    """
    # R = R_y R_x R_z has R[1, 2] = -sin(pitch), R[0, 2] / R[2, 2] = tan(yaw), R[1, 0] / R[1, 1] = tan(roll).
    pitch = torch.asin((-matrix[..., 1, 2]).clamp(-1.0, 1.0))
    cos_pitch = torch.sqrt(matrix[..., 1, 0] ** 2 + matrix[..., 1, 1] ** 2)
    locked = cos_pitch < 1e-6
    yaw = torch.where(locked, torch.atan2(-matrix[..., 2, 0], matrix[..., 0, 0]),
                      torch.atan2(matrix[..., 0, 2], matrix[..., 2, 2]))
    roll = torch.where(locked, torch.zeros_like(yaw), torch.atan2(matrix[..., 1, 0], matrix[..., 1, 1]))
    return torch.rad2deg(torch.stack([yaw, pitch, roll], -1))


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from the 6D representation, by Gram-Schmidt.

    Args:
        d6: ``(..., 6)``: two 3-vectors, the first two columns of ``R`` up to normalisation.

    Returns:
        ``(..., 3, 3)`` rotation matrices (``det = +1``).
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1, eps=1e-8)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=1e-8)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # the vectors are the columns


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 6)``: the first two columns, column after column."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], -1)


def euler_to_rotation_6d(angles: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` Euler angles in degrees -> ``(..., 6)``."""
    return matrix_to_rotation_6d(euler_to_matrix(angles))


def apply_pose(vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Rigidly move model-frame vertices into the camera frame: ``x_cam = R x + t``.

    Args:
        vertices: ``(B, V, 3)`` mm in the model frame.
        rotation: ``(B, 3, 3)`` rotation matrices (or ``(3, 3)`` for all).
        translation: ``(B, 3)`` mm (or ``(3,)``), e.g. ``(0, 0, -500)`` puts the model origin half a
            metre in front of the camera.

    Returns:
        ``(B, V, 3)`` mm in the camera frame.
    """
    return vertices @ rotation.transpose(-1, -2) + translation[..., None, :]
