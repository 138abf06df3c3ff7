"""Barycentric interpolation of vertex attributes over a rasterised image (nvdiffrast's ``interpolate``)."""

from __future__ import annotations

import torch

from facenet3d.errors import RenderError
from facenet3d.render import nvdiffrast_backend
from facenet3d.render.backend import resolve_backend
from facenet3d.render.rasterize import (
    Fragments,
    check_rast,
    corner_channel_index,
    corner_index,
    fragments_of,
    index_range,
)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, backend: str | None = None,
                covered_only: bool = False) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel.

    Args:
        attr: ``(B, V, C)`` attributes, or ``(V, C)`` shared by the batch.
        rast: ``(B, H, W, 4)`` output of :func:`~facenet3d.render.rasterize`.
        tri: ``(F, 3)`` int indices into ``attr`` for each rasterised triangle; it may differ
            from the triangles given to ``rasterize`` (e.g. UV triangles) as long as the
            triangle order is the same.
        backend: see :func:`~facenet3d.render.rasterize`.
        covered_only: return only the values at the pixels some triangle covers, ``(M, C)`` in the
            order of :func:`~facenet3d.render.rasterize.fragments_of` ``(rast).pixels`` (row-major
            over the batch): what per-pixel work (shading, texturing) needs, without filling and
            reading whole images.

    Returns:
        ``(B, H, W, C)`` values ``u a_0 + v a_1 + (1 - u - v) a_2`` of the pixel's triangle, zero on
        the background (or ``(M, C)``, see ``covered_only``); differentiable in ``attr`` and in
        ``rast``'s ``u, v``. Unlike nvdiffrast, a single tensor is returned (no image-space
        derivatives).

    On the torch backend, a ``rast`` fresh from :func:`~facenet3d.render.rasterize` brings the
    covered pixels the rasteriser found (:func:`~facenet3d.render.rasterize.fragments_of`), so
    interpolation works on them alone and passes gradients back to the positions directly.
    """
    check_rast(rast)
    if attr.ndim not in (2, 3) or (attr.ndim == 3 and attr.shape[0] != rast.shape[0]):
        raise RenderError(f"attr must be (V, C) or (B={rast.shape[0]}, V, C), got {tuple(attr.shape)}")
    if tri.ndim != 2 or tri.shape[-1] != 3 or tri.is_floating_point():
        raise RenderError(f"tri must be (F, 3) integer indices, got {tuple(tri.shape)}")
    low, high = index_range(tri)
    if low < 0 or high >= attr.shape[-2]:
        raise RenderError(f"tri indexes attributes outside 0..{attr.shape[-2] - 1}")
    if resolve_backend(backend, attr, rast) == "nvdiffrast":
        images = nvdiffrast_backend.interpolate(attr, rast, tri)
        if not covered_only:
            return images
        return images.reshape(-1, images.shape[-1]).index_select(0, fragments_of(rast).pixels)
    return interpolate_fragments(attr, fragments_of(rast), tri, dense=not covered_only)


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
    slots = fragments.channel_slots(attr.shape[-1]) if dense else None
    out = _Interpolate.apply(attr, fragments.uv, tri.to(device=attr.device, dtype=torch.int64), fragments.triangles,
                             fragments.images, slots, fragments.shape)
    return out.view(*fragments.shape, attr.shape[-1]) if dense else out


class _Interpolate(torch.autograd.Function):
    """``u a_0 + v a_1 + (1 - u - v) a_2`` at every covered pixel, forward and backward by hand.

    Tables are ``(channel, quantity, column)``: each triangle has the rows ``(a_0 - a_2, a_1 - a_2,
    a_2)`` per channel, gathered for all corners with one flat ``index_select`` and for all covered
    pixels with one ``index_select`` along the columns; the backward pass is one ``index_add_``
    over pixels and one over triangle corners, both along the long axis (several times faster on
    CPU than moving short rows, and without autograd's per-operation buffers). The dense image is
    written and read with one flat scatter and gather (``slots``).
    """

    @staticmethod
    def forward(ctx, attr: torch.Tensor, uv: torch.Tensor, tri: torch.Tensor, triangles: torch.Tensor,
                images: torch.Tensor, slots: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
        batched = attr if attr.ndim == 3 else attr[None]
        ab, nv, c = batched.shape
        f, m = tri.shape[0], triangles.shape[0]
        ctx.attr_shape = attr.shape
        ctx.dense = slots is not None
        out_size = shape[0] * shape[1] * shape[2] * c if ctx.dense else None
        if f == 0 or nv == 0 or m == 0:
            ctx.num_rows = None
            return attr.new_zeros(out_size) if ctx.dense else attr.new_zeros(m, c)
        index = corner_channel_index(tri, ab, nv, c)  # (C, 3, Ba * F)
        table = batched.reshape(-1).index_select(0, index.view(-1)).view(c, 3, ab * f)
        table[:, :2].sub_(table[:, 2:])  # (a_0 - a_2, a_1 - a_2, a_2)
        rows = triangles + images * f if ab > 1 else triangles
        t = table.view(3 * c, ab * f).index_select(1, rows).view(c, 3, m)
        uv_rows = uv.t()  # (2, M)
        values = torch.addcmul(t[:, 2], t[:, 0], uv_rows[0]).addcmul_(t[:, 1], uv_rows[1])  # (C, M)
        ctx.save_for_backward(t, uv_rows, rows, corner_index(tri, ab, nv), slots)
        ctx.num_rows = ab * f
        if ctx.dense:
            return attr.new_zeros(out_size).scatter_(0, slots.view(-1), values.view(-1))
        return values.t().contiguous()  # (M, C) rows, as per-pixel code downstream expects

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.num_rows is None:
            return torch.zeros(ctx.attr_shape, dtype=grad.dtype, device=grad.device), None, None, None, None, \
                None, None
        t, uv_rows, rows, corners, slots = ctx.saved_tensors
        c, m = t.shape[0], t.shape[2]
        if ctx.dense:
            grad = grad.reshape(-1).index_select(0, slots.view(-1)).view(c, m)
        else:
            grad = grad.t().contiguous()  # (C, M)
        grad_attr = grad_uv = None
        if ctx.needs_input_grad[0]:
            grad_rows = t.new_empty(c, 3, m)  # filled block by block: no concatenation copy
            torch.mul(grad[:, None], uv_rows, out=grad_rows[:, :2])
            grad_rows[:, 2] = grad
            g = t.new_zeros(3 * c, ctx.num_rows).index_add_(1, rows, grad_rows.view(3 * c, m)).view(c, 3, -1)
            g[:, 2].sub_(g[:, :2].sum(1))  # a_2 enters all three rows
            flat = t.new_zeros(c, ctx.attr_shape.numel() // c)
            flat.index_add_(1, corners.view(-1), g.view(c, -1))
            grad_attr = flat.t().view(ctx.attr_shape)
        if ctx.needs_input_grad[1]:
            grad_uv = (grad[:, None] * t[:, :2]).sum(0).t()  # (M, 2)
        return grad_attr, grad_uv, None, None, None, None, None
