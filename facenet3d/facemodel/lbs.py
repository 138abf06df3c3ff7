"""Linear blend skinning: the pure-function core of articulated face models (FLAME).

Follows the formulation of SMPL/FLAME: joints are regressed from the shaped rest mesh,
pose-corrective blend shapes are added to it, and every vertex is moved by the
skinning-weighted sum of its joints' rigid transforms.
"""

from __future__ import annotations

import torch


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula.

    Args:
        axis_angle: ``(..., 3)`` rotation vectors in radians.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    angle = axis_angle.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    axis = axis_angle / angle
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    s = torch.sin(angle)[..., None]
    c = torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + s * k + (1 - c) * (k @ k)


def lbs(
    shaped: torch.Tensor,
    pose: torch.Tensor,
    joint_regressor: torch.Tensor,
    parents: torch.Tensor,
    skinning_weights: torch.Tensor,
    pose_basis: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pose a shaped rest mesh.

    Args:
        shaped: ``(B, V, 3)`` rest-pose vertices with identity and expression applied.
        pose: ``(B, J, 3)`` axis-angle rotation of each joint relative to its parent, radians.
        joint_regressor: ``(J, V)`` joint locations as linear combinations of vertices.
        parents: ``(J,)`` int index of each joint's parent, ``-1`` for the root (joint 0).
        skinning_weights: ``(V, J)`` weights, rows summing to one.
        pose_basis: optional ``(9 * (J - 1), V, 3)`` pose-corrective blend shapes driven by
            the flattened ``R - I`` of the non-root joints.

    Returns:
        ``(B, V, 3)`` posed vertices, same units as ``shaped``.
    """
    b, j = pose.shape[:2]
    rot = axis_angle_to_matrix(pose)  # (B, J, 3, 3)
    # Joints come from the shaped mesh *before* pose correctives, as in SMPL/FLAME: the
    # correctives must not move the joints they are driven by.
    joints = torch.einsum("jv,bvc->bjc", joint_regressor, shaped)  # (B, J, 3)
    if pose_basis is not None and j > 1:
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        feature = (rot[:, 1:] - eye).reshape(b, -1)  # (B, 9(J-1))
        shaped = shaped + (feature @ pose_basis.reshape(pose_basis.shape[0], -1)).reshape(shaped.shape)

    # World transform of every joint, walking the kinematic tree from the root.
    transforms: list[torch.Tensor] = []
    for i in range(j):
        p = int(parents[i])
        local_t = joints[:, i] if p < 0 else joints[:, i] - joints[:, p]
        local = _rigid(rot[:, i], local_t)
        transforms.append(local if p < 0 else transforms[p] @ local)
    world = torch.stack(transforms, dim=1)  # (B, J, 4, 4)

    # Remove the rest-pose joint location so each transform maps rest space to posed space.
    rest = torch.einsum("bjrc,bjc->bjr", world[..., :3, :3], joints)
    world = world.clone()
    world[..., :3, 3] = world[..., :3, 3] - rest
    blended = torch.einsum("vj,bjrc->bvrc", skinning_weights, world)  # (B, V, 4, 4)
    return torch.einsum("bvrc,bvc->bvr", blended[..., :3, :3], shaped) + blended[..., :3, 3]


def _rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)``, ``(B, 3)`` -> ``(B, 4, 4)`` homogeneous transform."""
    out = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1
    return out
