"""Bilinear texture sampling (nvdiffrast's ``texture`` with ``filter_mode="linear"``)."""

from __future__ import annotations

import torch

from facenet3d.errors import RenderError
from facenet3d.render import nvdiffrast_backend
from facenet3d.render.backend import resolve_backend

BOUNDARY_MODES = ("wrap", "clamp", "zero")


def texture(tex: torch.Tensor, uv: torch.Tensor, boundary_mode: str = "wrap", backend: str | None = None
            ) -> torch.Tensor:
    """Sample a texture bilinearly at texture coordinates.

    Args:
        tex: ``(B, Ht, Wt, C)`` texture, or ``(1, Ht, Wt, C)`` shared by the batch.
        uv: ``(B, H, W, 2)`` texture coordinates in nvdiffrast's convention: ``u`` runs along the
            width and ``v`` along the height of ``tex``, ``(0, 0)`` is the corner of texel
            ``tex[:, 0, 0]`` and texel centres sit at ``((j + 0.5) / Wt, (i + 0.5) / Ht)``. (OBJ-style
            coordinates with ``v`` up and row 0 at the top of the image need ``v -> 1 - v``.)
        boundary_mode: ``"wrap"`` (repeat, nvdiffrast's default), ``"clamp"`` (edge texels) or
            ``"zero"`` (black outside).
        backend: see :func:`~facenet3d.render.rasterize`.

    Returns:
        ``(B, H, W, C)``, differentiable in ``tex`` and in ``uv`` (piecewise bilinear; non-finite
        coordinates sample texel ``(0, 0)``'s corner).
    """
    if tex.ndim != 4 or uv.ndim != 4 or uv.shape[-1] != 2 or tex.shape[0] not in (1, uv.shape[0]):
        raise RenderError(f"texture needs tex (B or 1, Ht, Wt, C) and uv (B, H, W, 2), got {tuple(tex.shape)} "
                          f"and {tuple(uv.shape)}")
    if boundary_mode not in BOUNDARY_MODES:
        raise RenderError(f"boundary_mode must be one of {BOUNDARY_MODES}, got {boundary_mode!r}")
    if resolve_backend(backend, tex, uv) == "nvdiffrast":
        return nvdiffrast_backend.texture(tex, uv, boundary_mode)

    b, h, w = uv.shape[:3]
    images = None if tex.shape[0] == 1 else torch.arange(b, device=uv.device).repeat_interleave(h * w)
    return sample_bilinear(tex, uv.reshape(-1, 2), images, boundary_mode).view(b, h, w, tex.shape[-1])


def sample_bilinear(tex: torch.Tensor, uv: torch.Tensor, images: torch.Tensor | None,
                    boundary_mode: str = "wrap") -> torch.Tensor:
    """The sampling behind :func:`texture`, at a flat list of points.

    Args:
        tex: ``(Bt, Ht, Wt, C)`` textures.
        uv: ``(M, 2)`` texture coordinates (conventions of :func:`texture`).
        images: ``(M,)`` int64 texture index of each point, or None to use texture 0 for all.
        boundary_mode: ``"wrap"``, ``"clamp"`` or ``"zero"``.

    Returns:
        ``(M, C)``, differentiable in ``tex`` and ``uv``.
    """
    return _Bilinear.apply(tex, uv, images, boundary_mode)


class _Bilinear(torch.autograd.Function):
    """Four-tap bilinear sampling with a hand-fused backward pass (one ``index_add`` for the texture)."""

    @staticmethod
    def forward(ctx, tex: torch.Tensor, uv: torch.Tensor, images: torch.Tensor | None, boundary_mode: str
                ) -> torch.Tensor:
        tb, th, tw, c = tex.shape
        uv = torch.where(torch.isfinite(uv), uv, 0.0)
        # Continuous texel coordinates with texel centres at integers.
        x = uv[:, 0] * tw - 0.5
        y = uv[:, 1] * th - 0.5
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x0, y0 = x0.long(), y0.long()
        xs = torch.stack([x0, x0 + 1], 1)  # (M, 2)
        ys = torch.stack([y0, y0 + 1], 1)
        valid = None
        if boundary_mode == "wrap":
            xs, ys = xs.remainder(tw), ys.remainder(th)
        else:
            if boundary_mode == "zero":
                valid = (((ys >= 0) & (ys < th))[:, :, None] & ((xs >= 0) & (xs < tw))[:, None, :]).reshape(-1, 4)
            xs, ys = xs.clamp(0, tw - 1), ys.clamp(0, th - 1)
        # The four taps (y, x) in the order (0, 0), (0, 1), (1, 0), (1, 1).
        index = (ys[:, :, None] * tw + xs[:, None, :]).reshape(-1, 4)
        if images is not None and tb > 1:
            index = index + (images * (th * tw))[:, None]
        taps = tex.reshape(tb * th * tw, c).index_select(0, index.reshape(-1)).view(-1, 4, c)
        if valid is not None:
            taps = taps * valid[:, :, None].to(taps.dtype)
        top = torch.lerp(taps[:, 0], taps[:, 1], fx)
        bottom = torch.lerp(taps[:, 2], taps[:, 3], fx)
        ctx.save_for_backward(taps, index, fx, fy, top, bottom, valid)
        ctx.tex_shape = tex.shape
        return torch.lerp(top, bottom, fy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        taps, index, fx, fy, top, bottom, valid = ctx.saved_tensors
        tb, th, tw, c = ctx.tex_shape
        grad_tex = grad_uv = None
        if ctx.needs_input_grad[0]:
            weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)  # (M, 4, 1)
            if valid is not None:
                weights = weights * valid[:, :, None].to(weights.dtype)
            grad_tex = grad.new_zeros(tb * th * tw, c).index_add_(0, index.reshape(-1),
                                                                  (weights * grad[:, None]).reshape(-1, c))
            grad_tex = grad_tex.view(ctx.tex_shape)
        if ctx.needs_input_grad[1]:
            d_fx = torch.lerp(taps[:, 1] - taps[:, 0], taps[:, 3] - taps[:, 2], fy)
            d_fy = bottom - top
            grad_uv = torch.stack([(grad * d_fx).sum(1) * tw, (grad * d_fy).sum(1) * th], 1)
        return grad_tex, grad_uv, None, None
