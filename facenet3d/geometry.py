"""Small mesh-geometry functions shared by the face models, the renderer and the exporters."""

from __future__ import annotations

import torch


def face_normals(vertices: torch.Tensor, triangles: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Per-triangle normals of a batch of meshes.

    Args:
        vertices: ``(B, V, 3)`` positions.
        triangles: ``(F, 3)`` int vertex indices, counter-clockwise seen from the front.
        normalize: return unit normals; otherwise the cross product, whose length is twice
            the triangle area.

    Returns:
        ``(B, F, 3)`` normals.
    """
    v0, v1, v2 = (vertices[:, triangles[:, i]] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: ``(B, V, 3)`` positions.
        triangles: ``(F, 3)`` int vertex indices.

    Returns:
        ``(B, V, 3)`` unit normals; a vertex used by no triangle gets ``(0, 0, 0)``.

    Example:
        >>> v = torch.tensor([[[0., 0, 0], [1, 0, 0], [0, 1, 0]]])
        >>> vertex_normals(v, torch.tensor([[0, 1, 2]]))[0, 0]
        tensor([0., 0., 1.])
    """
    fn = face_normals(vertices, triangles, normalize=False)  # area weighting comes for free
    out = torch.zeros_like(vertices)
    idx = triangles.reshape(-1).to(vertices.device)
    out.index_add_(1, idx, fn.repeat_interleave(3, dim=1))
    return torch.nn.functional.normalize(out, dim=-1, eps=1e-12)
