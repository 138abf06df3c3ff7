"""Image-fidelity metrics on a face region: PSNR and SSIM of a render against the photo."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_psnr(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1) over the masked pixels.

    Args:
        rendered, target: ``(B, H, W, 3)`` in [0, 1] (same encoding, e.g. sRGB).
        mask: ``(B, H, W)`` bool or {0, 1}.

    Returns:
        ``(B,)``.
    """
    m = mask.to(rendered.dtype)[..., None]
    mse = (((rendered - target) ** 2) * m).flatten(1).sum(1) / (3 * m.flatten(1).sum(1)).clamp_min(1.0)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def masked_ssim(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of the
    luminance over the masked pixels.

    Args:
        rendered, target: ``(B, H, W, 3)`` in [0, 1].
        mask: ``(B, H, W)``.

    Returns:
        ``(B,)``.
    """
    w = torch.tensor([0.299, 0.587, 0.114], dtype=rendered.dtype, device=rendered.device)
    x = (rendered @ w)[:, None]
    y = (target @ w)[:, None]
    win = _gaussian_window(dtype=rendered.dtype).to(rendered.device)
    pad = win.shape[-1] // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), win)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    m = mask.to(rendered.dtype)
    return (ssim[:, 0] * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
