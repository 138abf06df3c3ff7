"""Loss terms as plain functions of tensors (batched; each returns a ``(B,)`` per-face loss).

Returning per-face values lets a batch job weight or mask faces, and lets the per-image
refinement optimise a batch of independent faces in one go.
"""

from __future__ import annotations

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


def symmetry_loss(maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference between ``(B, H, W, C)`` UV maps and their left/right mirror
    (for a UV layout symmetric about ``u = 0.5``) -> ``(B,)``."""
    diff = (maps - maps.flip(2)) ** 2
    if mask is not None:
        diff = diff * (mask & mask.flip(1))[None, ..., None]
    return diff.flatten(1).mean(1)
