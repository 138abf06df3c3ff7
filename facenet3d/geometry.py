"""Small mesh-geometry functions shared by the face models, the renderer and the exporters."""

from __future__ import annotations

import torch

# Layout (CPU speed): per-triangle work runs on *component rows*, ``(3, B, N)`` tensors whose x, y
# and z are each a contiguous row. Gathers and scatters then run along the long axis
# (``index_select`` / ``index_add_`` on dim 1 of a ``(3 * B, V)`` view, which also needs no
# per-batch index offsets) and elementwise ops on contiguous rows; the same work on short
# ``(N, 3)`` rows is 3-5x slower. Results go back to callers as contiguous ``(B, N, 3)``.

_NORMAL_EPS = 1e-12


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
    n = _FaceCross.apply(vertices, triangles.to(device=vertices.device, dtype=torch.int64))
    return torch.nn.functional.normalize(n, dim=-1, eps=_NORMAL_EPS) if normalize else n


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


def _corner_indices(triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(3 * F,)`` vertex indices, corner-major (all first corners, then all second, then all
    third), as int64 for ``index_add_`` (an int32 index takes a ~30x slower path on CPU) and as
    int32 for ``index_select`` (faster than with int64 on CPU)."""
    corners = torch.stack(triangles.unbind(1)).view(-1)  # stack: a transposing copy faster than .t().contiguous()
    return corners, corners.int()


def _component_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, 3)`` -> contiguous ``(3, B, N)``."""
    return torch.stack(x.unbind(2))  # several times faster on CPU than permute(2, 0, 1).contiguous()


def _interleave(rows: torch.Tensor) -> torch.Tensor:
    """Component rows ``(3, B, N)`` -> contiguous ``(B, N, 3)``, the layout callers expect (a
    strided result would slow every op downstream)."""
    out = rows.new_empty(rows.shape[1:] + (3,))
    out.permute(2, 0, 1).copy_(rows)
    return out


def _cross_rows(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``a x b`` of component rows ``(3, ...)`` into ``out`` (torch.linalg.cross is several times
    slower). Two rounded products, not a fused addcmul: a degenerate triangle (``e1 == e2``) must
    give exactly zero, not a rounding residue that would normalise to a random direction."""
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        torch.mul(a[j], b[k], out=out[i]).sub_(a[k] * b[j])
    return out


def _dot_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product of component rows ``(3, ...)`` -> ``(...)``; summing along dim 0 with
    torch.linalg.vector_norm or sum(0) is slower on CPU."""
    return (a[0] * b[0]).addcmul_(a[1], b[1]).addcmul_(a[2], b[2])


def _triangle_cross(vertices: torch.Tensor, corners32: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``n = e1 x e2`` with ``e1 = v1 - v0``, ``e2 = v2 - v0`` for every triangle, all three as
    component rows ``(3, B, F)``; ``|n|`` is twice the triangle area. Not differentiable by itself:
    :func:`_triangle_cross_grad` is its backward."""
    b, v = vertices.shape[:2]
    f = corners32.shape[0] // 3
    rows = _component_rows(vertices).view(3 * b, v)
    v0, v1, v2 = rows.index_select(1, corners32).view(3, b, 3, f).unbind(2)
    e1, e2 = v1 - v0, v2 - v0
    return _cross_rows(e1, e2, out=torch.empty_like(e1)), e1, e2


def _triangle_cross_grad(g_n: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor, corners: torch.Tensor,
                         num_vertices: int) -> torch.Tensor:
    """Gradient ``(3, B, V)`` (component rows) with respect to the vertices of ``n = e1 x e2``,
    given ``g_n``, the ``(3, B, F)`` gradient with respect to ``n``."""
    b, f = g_n.shape[1:]
    # dL/de1 = e2 x g_n, dL/de2 = g_n x e1; they reach the corners as (-(g_e1 + g_e2), g_e1, g_e2),
    # written in place in the corner-major layout of `corners` for a single scatter.
    g_corners = g_n.new_empty(3, b, 3, f)
    g_e1 = _cross_rows(e2, g_n, out=g_corners[:, :, 1])
    g_e2 = _cross_rows(g_n, e1, out=g_corners[:, :, 2])
    torch.add(g_e1, g_e2, out=g_corners[:, :, 0]).neg_()
    grad = g_n.new_zeros(3 * b, num_vertices).index_add_(1, corners, g_corners.view(3 * b, 3 * f))
    return grad.view(3, b, num_vertices)


class _FaceCross(torch.autograd.Function):
    """Unnormalised per-triangle normals ``(B, F, 3)``."""

    @staticmethod
    def forward(ctx, vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        corners, corners32 = _corner_indices(triangles)
        n, e1, e2 = _triangle_cross(vertices, corners32)
        ctx.save_for_backward(corners, e1, e2)
        ctx.num_vertices = vertices.shape[1]
        return _interleave(n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        corners, e1, e2 = ctx.saved_tensors
        return _interleave(_triangle_cross_grad(_component_rows(grad), e1, e2, corners, ctx.num_vertices)), None


class _VertexNormals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        b, v = vertices.shape[:2]
        f = triangles.shape[0]
        corners, corners32 = _corner_indices(triangles)
        n, e1, e2 = _triangle_cross(vertices, corners32)  # |n| = 2 * area: area weighting for free
        acc = n.new_zeros(3 * b, v)
        for corner in corners.view(3, f):
            acc.index_add_(1, corner, n.view(3 * b, f))
        acc = acc.view(3, b, v)
        norm = _dot_rows(acc, acc).clamp_min_(_NORMAL_EPS**2).sqrt_()  # max(|acc|, eps)
        out = acc.div_(norm)
        ctx.save_for_backward(corners, corners32, e1, e2, out, norm)
        return _interleave(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        corners, corners32, e1, e2, out, norm = ctx.saved_tensors
        b, v = norm.shape
        f = e1.shape[2]
        g = _component_rows(grad)
        # out = acc / max(|acc|, eps): project out the radial part where the norm is not clamped.
        radial = _dot_rows(g, out).mul_(norm > _NORMAL_EPS)
        g_acc = torch.addcmul(g, out, radial, value=-1).div_(norm).view(3 * b, v)
        g0, g1, g2 = g_acc.index_select(1, corners32).view(3, b, 3, f).unbind(2)
        g_n = (g0 + g1).add_(g2)  # each triangle's n reaches its three corners' sums
        return _interleave(_triangle_cross_grad(g_n, e1, e2, corners, v)), None
