"""Loss terms as plain functions of tensors (batched; each returns a ``(B,)`` per-face loss).

Returning per-face values lets a batch job weight or mask faces, and lets the per-image
refinement optimise a batch of independent faces in one go.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def robust_rho(residual: torch.Tensor, scale: float) -> torch.Tensor:
    """Geman-McClure-like robust penalty ``r^2 / (r^2 + c^2)`` scaled to behave like ``r^2``
    near zero: ``c^2 r^2 / (r^2 + c^2)``. Residuals far beyond ``scale`` (hair, glasses, hands
    in front of the face) stop pulling the fit.

    Args:
        residual: any shape, non-negative magnitudes (e.g. per-pixel colour distance).
        scale: ``c``, the residual size where the penalty starts to saturate.
    """
    r2 = residual * residual
    c2 = scale * scale
    return c2 * r2 / (r2 + c2)


def photometric_loss(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     scale: float = 0.1) -> torch.Tensor:
    """Masked, outlier-robust colour error.

    Args:
        rendered: ``(B, H, W, 3)`` rendered image in [0, 1].
        target: ``(B, H, W, 3)`` photo in [0, 1].
        mask: ``(B, H, W)`` or ``(B, H, W, 1)`` weights (face skin x render coverage).
        scale: robust scale of the per-pixel colour distance.

    Returns:
        ``(B,)`` mean robust error over the masked pixels.
    """
    if mask.ndim == 4:
        mask = mask[..., 0]
    dist = torch.sqrt(((rendered - target) ** 2).sum(-1) + 1e-8)  # L2 per pixel: robust to colour noise
    rho = robust_rho(dist, scale) / (scale * scale)
    return (rho * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                  normaliser: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Weighted mean squared 2D landmark distance.

    Args:
        predicted: ``(B, L, 2)`` projected landmarks, px.
        target: ``(B, L, 2)`` detected landmarks, px.
        weights: ``(L,)`` or ``(B, L)`` per-landmark weights (default 1).
        normaliser: ``(B,)`` or scalar length, px, the distances are divided by (e.g. the
            face size), making the loss resolution independent.

    Returns:
        ``(B,)``.
    """
    d2 = ((predicted - target) ** 2).sum(-1)
    if weights is None:
        weights = torch.ones_like(d2)
    weights = weights.expand_as(d2)
    n = torch.as_tensor(normaliser, dtype=d2.dtype, device=d2.device)
    return (d2 * weights).sum(1) / weights.sum(1).clamp_min(1e-8) / (n * n).reshape(-1)


def coefficient_prior(coefficients: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian prior ``mean((c / std)^2)`` on model coefficients ``(B, K)`` -> ``(B,)``."""
    if coefficients.shape[1] == 0:
        return coefficients.new_zeros(coefficients.shape[0])
    c = coefficients if std is None else coefficients / std
    return (c * c).mean(1)


def total_variation(maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference of neighbouring texels of ``(B, H, W, C)`` maps -> ``(B,)``.

    ``mask`` ``(H, W)`` restricts it to texels inside the UV charts.
    """
    dx = (maps[:, :, 1:] - maps[:, :, :-1]).abs()
    dy = (maps[:, 1:] - maps[:, :-1]).abs()
    if mask is not None:
        dx = dx * (mask[:, 1:] & mask[:, :-1])[None, ..., None]
        dy = dy * (mask[1:] & mask[:-1])[None, ..., None]
    return dx.flatten(1).mean(1) + dy.flatten(1).mean(1)


def laplacian_smoothness(maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared discrete Laplacian of ``(B, H, W, C)`` maps -> ``(B,)``."""
    # Shifted slices of the zero-padded maps rather than a 3x3 convolution: on CPU a one-channel
    # convolution of a large map (and above all its backward pass) costs tens of times more.
    p = torch.nn.functional.pad(maps, (0, 0, 1, 1, 1, 1))
    lap = (p[:, :-2, 1:-1] + p[:, 2:, 1:-1]) + (p[:, 1:-1, :-2] + p[:, 1:-1, 2:]) - 4.0 * maps
    if mask is not None:
        lap = lap * mask[None, ..., None]
    return (lap ** 2).flatten(1).mean(1)


def quadratic_map_terms(maps: Sequence[torch.Tensor], mask: torch.Tensor, smoothness: Sequence[float],
                        magnitude: Sequence[float], symmetry: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted sum of :func:`laplacian_smoothness`, masked mean squares and :func:`symmetry_loss` of
    several maps -> ``(B,)``.

    ``sum_i smoothness[i] * laplacian_smoothness(maps[i], mask) + magnitude[i] * mean(mask * maps[i]^2)
    + symmetry[i] * symmetry_loss(maps[i], mask)`` (means over each map's texels and channels), with
    the gradient written out: every term is quadratic, the zero-padded Laplacian is its own
    transpose and the mirror difference ``D = x - flip(x)`` is odd under the mirror, so the gradient
    of map ``i`` is ``2 / N_i (smoothness[i] L(mask L(x)) + magnitude[i] mask x + 2 symmetry[i]
    mask_s D)`` (``mask_s``: texels whose mirror is in the mask too). On CPU that is a few passes over
    each map instead of the dozens autograd makes through padded copies, shifted slices and flips.

    Args:
        maps: ``(B, H, W, C_i)`` maps sharing ``B, H, W``.
        mask: ``(H, W)`` bool texels the terms cover (the UV charts).
        smoothness, magnitude: one weight per map.
        symmetry: one weight per map (for a UV layout symmetric about ``u = 0.5``); None: all 0.
    """
    symmetry = (0.0,) * len(maps) if symmetry is None else tuple(symmetry)
    mirrored = (mask & mask.flip(1)).to(maps[0].dtype)
    return _QuadraticMapTerms.apply(mask.to(maps[0].dtype), mirrored, tuple(smoothness), tuple(magnitude),
                                    symmetry, *maps)


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    """Zero-padded five-point Laplacian of ``(B, H, W, C)`` maps, same shape."""
    out = x * -4.0
    out[:, 1:] += x[:, :-1]
    out[:, :-1] += x[:, 1:]
    out[:, :, 1:] += x[:, :, :-1]
    out[:, :, :-1] += x[:, :, 1:]
    return out


class _QuadraticMapTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mask: torch.Tensor, mirrored: torch.Tensor, smoothness: tuple[float, ...],
                magnitude: tuple[float, ...], symmetry: tuple[float, ...], *maps: torch.Tensor) -> torch.Tensor:
        m, ms = mask[None, ..., None], mirrored[None, ..., None]
        total = maps[0].new_zeros(maps[0].shape[0])
        laps, diffs = [], []
        for x, s, v, w in zip(maps, smoothness, magnitude, symmetry, strict=True):
            n = x[0].numel()
            lap = _laplacian(x).mul_(m) if s else None
            if s:
                total = total + (s / n) * lap.square().flatten(1).sum(1)
            if v:
                total = total + (v / n) * (x.square() * m).flatten(1).sum(1)
            diff = (x - x.flip(2)).mul_(ms) if w else None  # masked on both sides: mask_s^2 = mask_s
            if w:
                total = total + (w / n) * diff.square().flatten(1).sum(1)
            laps.append(lap)
            diffs.append(diff)
        ctx.save_for_backward(mask, *maps)
        ctx.laps, ctx.diffs = laps, diffs
        ctx.weights = (smoothness, magnitude)
        ctx.symmetry_weights = symmetry
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mask, *maps = ctx.saved_tensors
        m = mask[None, ..., None]
        g = grad[:, None, None, None]
        grads = []
        for i, (x, lap, diff, s, v) in enumerate(zip(maps, ctx.laps, ctx.diffs, *ctx.weights, strict=True)):
            if not ctx.needs_input_grad[5 + i]:
                grads.append(None)
                continue
            n = x[0].numel()
            d = torch.zeros_like(x) if lap is None else _laplacian(lap).mul_(2 * s / n)
            if v:
                d = d.add_(x * m, alpha=2 * v / n)
            if diff is not None:
                d = d.add_(diff, alpha=4 * ctx.symmetry_weights[i] / n)
            grads.append(d.mul_(g))
        return None, None, None, None, None, *grads


def symmetry_loss(maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference between ``(B, H, W, C)`` UV maps and their left/right mirror
    (for a UV layout symmetric about ``u = 0.5``) -> ``(B,)``."""
    diff = (maps - maps.flip(2)) ** 2
    if mask is not None:
        diff = diff * (mask & mask.flip(1))[None, ..., None]
    return diff.flatten(1).mean(1)
