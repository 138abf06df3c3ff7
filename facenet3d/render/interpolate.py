"""Barycentric interpolation of vertex attributes over a rasterised image (nvdiffrast's ``interpolate``)."""

from __future__ import annotations

import torch

from facenet3d.errors import RenderError
from facenet3d.render import nvdiffrast_backend
from facenet3d.render.backend import resolve_backend
from facenet3d.render.rasterize import Fragments, check_rast, corner_index


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, backend: str | None = None
                ) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel.

    Args:
        attr: ``(B, V, C)`` attributes, or ``(V, C)`` shared by the batch.
        rast: ``(B, H, W, 4)`` output of :func:`~facenet3d.render.rasterize`.
        tri: ``(F, 3)`` int indices into ``attr`` for each rasterised triangle; it may differ
            from the triangles given to ``rasterize`` (e.g. UV triangles) as long as the
            triangle order is the same.
        backend: see :func:`~facenet3d.render.rasterize`.

    Returns:
        ``(B, H, W, C)`` values ``u a_0 + v a_1 + (1 - u - v) a_2`` of the pixel's triangle, zero on
        the background; differentiable in ``attr`` and in ``rast``'s ``u, v``. Unlike
        nvdiffrast, a single tensor is returned (no image-space derivatives).
    """
    check_rast(rast)
    if attr.ndim not in (2, 3) or (attr.ndim == 3 and attr.shape[0] != rast.shape[0]):
        raise RenderError(f"attr must be (V, C) or (B={rast.shape[0]}, V, C), got {tuple(attr.shape)}")
    if tri.ndim != 2 or tri.shape[-1] != 3 or tri.is_floating_point():
        raise RenderError(f"tri must be (F, 3) integer indices, got {tuple(tri.shape)}")
    if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= attr.shape[-2]):
        raise RenderError(f"tri indexes attributes outside 0..{attr.shape[-2] - 1}")
    if resolve_backend(backend, attr, rast) == "nvdiffrast":
        return nvdiffrast_backend.interpolate(attr, rast, tri)

    return interpolate_fragments(attr, Fragments.from_rast(rast), tri)


def interpolate_fragments(attr: torch.Tensor, fragments: Fragments, tri: torch.Tensor, dense: bool = True
                          ) -> torch.Tensor:
    """:func:`interpolate` from :func:`~facenet3d.render.rasterize.rasterize_fragments` output (torch backend).

    Args:
        attr: ``(B, V, C)`` or ``(V, C)``.
        fragments: the covered pixels of the raster.
        tri: ``(F, 3)`` int indices into ``attr``.
        dense: return the image ``(B, H, W, C)`` (zero on the background), or only the values at
            the covered pixels, ``(M, C)`` in the order of ``fragments.pixels``.

    Returns:
        ``(B, H, W, C)`` or ``(M, C)``, differentiable in ``attr`` and ``fragments.uv``.
    """
    out = _Interpolate.apply(attr, fragments.uv, tri.to(device=attr.device, dtype=torch.int64), fragments.pixels,
                             fragments.triangles, fragments.images, fragments.shape if dense else None)
    return out.view(*fragments.shape, attr.shape[-1]) if dense else out


class _Interpolate(torch.autograd.Function):
    """``u a_0 + v a_1 + (1 - u - v) a_2`` at every covered pixel, forward and backward by hand.

    Each covered pixel reads one row ``(a_0 - a_2, a_1 - a_2, a_2)`` of a per-triangle table, so
    the backward pass is one ``index_add`` over pixels and three over triangle corners, without
    autograd's per-operation full-image buffers.
    """

    @staticmethod
    def forward(ctx, attr: torch.Tensor, uv: torch.Tensor, tri: torch.Tensor, pixels: torch.Tensor,
                triangles: torch.Tensor, images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        batched = attr if attr.ndim == 3 else attr[None]
        ab, nv, c = batched.shape
        f = tri.shape[0]
        n = pixels.shape[0] if shape is None else shape[0] * shape[1] * shape[2]  # compact or dense output
        ctx.attr_shape = attr.shape
        ctx.dense = shape is not None
        if f == 0 or nv == 0 or pixels.numel() == 0:
            ctx.num_rows = None
            return attr.new_zeros(n, c)
        corners = corner_index(tri, ab, nv)  # (3, Ba * F)
        a = batched.reshape(ab * nv, c).index_select(0, corners.reshape(-1)).view(3, ab * f, c)
        table = torch.cat([a[0] - a[2], a[1] - a[2], a[2]], 1)  # (Ba * F, 3C)
        rows = triangles + images * f if ab > 1 else triangles
        t = table.index_select(0, rows)  # (M, 3C)
        values = torch.addcmul(t[:, 2 * c:], uv[:, :1], t[:, :c]).addcmul_(uv[:, 1:], t[:, c:2 * c])
        out = attr.new_zeros(n, c).index_copy_(0, pixels, values) if ctx.dense else values
        ctx.save_for_backward(pixels, t, rows, uv, corners)
        ctx.num_rows = ab * f
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.num_rows is None:
            return torch.zeros(ctx.attr_shape, dtype=grad.dtype, device=grad.device), None, None, None, None, \
                None, None
        pixels, t, rows, uv, corners = ctx.saved_tensors
        c = t.shape[1] // 3
        if ctx.dense:
            grad = grad.index_select(0, pixels)  # (M, C)
        grad_attr = grad_uv = None
        if ctx.needs_input_grad[0]:
            grad_rows = t.new_empty(t.shape)  # filled block by block: no concatenation copy
            torch.mul(grad, uv[:, :1], out=grad_rows[:, :c])
            torch.mul(grad, uv[:, 1:], out=grad_rows[:, c:2 * c])
            grad_rows[:, 2 * c:] = grad
            g = t.new_zeros(ctx.num_rows, 3 * c).index_add_(0, rows, grad_rows)
            g0, g1, g2 = g[:, :c], g[:, c:2 * c], g[:, 2 * c:]
            flat = t.new_zeros(ctx.attr_shape.numel() // c, c)
            flat.index_add_(0, corners[0], g0).index_add_(0, corners[1], g1)
            flat.index_add_(0, corners[2], g2 - g0 - g1)
            grad_attr = flat.view(ctx.attr_shape)
        if ctx.needs_input_grad[1]:
            grad_uv = torch.stack([_row_dot(grad, t[:, :c]), _row_dot(grad, t[:, c:2 * c])], 1)
        return grad_attr, grad_uv, None, None, None, None, None

def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(1)`` for ``(N, C)`` inputs; written out for few channels, where it is faster."""
    if a.shape[1] > 4:
        return (a * b).sum(1)
    out = a[:, 0] * b[:, 0]
    for i in range(1, a.shape[1]):
        out.addcmul_(a[:, i], b[:, i])
    return out
