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
    b, v = vertices.shape[:2]
    f = triangles.shape[0]
    # One row gather on the flattened batch (advanced indexing along dim 1 is several times slower
    # on CPU), and the cross product written out (torch.cross is slow for many short vectors).
    index = triangles.reshape(1, -1).to(vertices.device) + (torch.arange(b, device=vertices.device) * v)[:, None]
    v0, v1, v2 = vertices.reshape(b * v, 3).index_select(0, index.reshape(-1)).view(b, f, 3, 3).unbind(2)
    ax, ay, az = (v1 - v0).unbind(-1)
    bx, by, bz = (v2 - v0).unbind(-1)
    n = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: ``(B, V, 3)`` positions.
        triangles: ``(F, 3)`` int vertex indices.

    Returns:
        ``(B, V, 3)`` unit normals; a vertex used by no triangle gets ``(0, 0, 0)``. Differentiable
        (a hand-written backward pass: this runs in every render step).

    Example:
        >>> v = torch.tensor([[[0., 0, 0], [1, 0, 0], [0, 1, 0]]])
        >>> vertex_normals(v, torch.tensor([[0, 1, 2]]))[0, 0]
        tensor([0., 0., 1.])
    """
    return _VertexNormals.apply(vertices, triangles.to(device=vertices.device, dtype=torch.int64))


_NORMAL_EPS = 1e-12


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cross product of ``(N, 3)`` tensors (torch.cross is slow for many short vectors)."""
    ax, ay, az = a.unbind(1)
    bx, by, bz = b.unbind(1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], 1)


class _VertexNormals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        b, v = vertices.shape[:2]
        # Corner rows in the flattened batch, (3, B * F).
        corners = (triangles.t()[:, None, :] + (torch.arange(b, device=vertices.device) * v)[:, None]).reshape(3, -1)
        flat = vertices.reshape(b * v, 3)
        v0, v1, v2 = flat.index_select(0, corners.reshape(-1)).view(3, -1, 3)
        e1, e2 = v1 - v0, v2 - v0
        n = _cross(e1, e2)  # twice the area times the unit normal: area weighting for free
        acc = flat.new_zeros(b * v, 3)
        for corner in corners:
            acc.index_add_(0, corner, n)
        norm = acc.norm(dim=1, keepdim=True).clamp_min(_NORMAL_EPS)
        out = acc / norm
        ctx.save_for_backward(corners, e1, e2, out, norm)
        return out.view(b, v, 3)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        corners, e1, e2, out, norm = ctx.saved_tensors
        g = grad.reshape(-1, 3)
        # out = acc / max(|acc|, eps): project out the radial part where the norm is not clamped.
        radial = (g * out).sum(1, keepdim=True) * (norm > _NORMAL_EPS)
        g_acc = (g - out * radial) / norm
        g_n = g_acc.index_select(0, corners[0]) + g_acc.index_select(0, corners[1])
        g_n += g_acc.index_select(0, corners[2])
        g_e1, g_e2 = _cross(e2, g_n), _cross(g_n, e1)  # n = e1 x e2
        grad_vertices = g.new_zeros(g.shape)
        grad_vertices.index_add_(0, corners[0], -(g_e1 + g_e2))
        grad_vertices.index_add_(0, corners[1], g_e1).index_add_(0, corners[2], g_e2)
        return grad_vertices.view(grad.shape), None
