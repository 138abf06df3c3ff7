"""Resampling of UV maps between sizes: one bilinear convention for torch and numpy.

A face model may store its albedo modes coarser than its mean map (modes are smooth, the mean
carries the detail): the maps are upsampled with texel centres at ``+0.5`` (torch's
``align_corners=False``), which is the convention of OpenCV's ``INTER_LINEAR`` too, so the
torch-free runtime decodes the same albedo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the numpy twin serves the torch-free runtime
    import torch


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., h, w, C)`` maps -> ``(..., H, W, C)``, bilinear, texel centres at +0.5."""
    return _resize_maps(maps, size, mode="bilinear", align_corners=False)


def downsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., H, W, C)`` maps -> ``(..., h, w, C)``, each texel the mean of the texels it covers (area)."""
    return _resize_maps(maps, size, mode="area")


def _resize_maps(maps: torch.Tensor, size: tuple[int, int], **how) -> torch.Tensor:
    """Channels-last maps resized with ``torch.nn.functional.interpolate(..., **how)``."""
    import torch.nn.functional as F

    h, w = int(size[0]), int(size[1])
    if tuple(maps.shape[-3:-1]) == (h, w):
        return maps
    lead = maps.shape[:-3]
    flat = maps.reshape(-1, *maps.shape[-3:]).permute(0, 3, 1, 2)
    out = F.interpolate(flat, size=(h, w), **how)
    return out.permute(0, 2, 3, 1).reshape(*lead, h, w, maps.shape[-1])


def upsample_maps_np(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """numpy twin of :func:`upsample_maps` for ``(h, w, C)`` maps (the torch-free runtime)."""
    import cv2

    h, w = int(size[0]), int(size[1])
    if maps.shape[:2] == (h, w):
        return maps
    out = cv2.resize(np.ascontiguousarray(maps, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(h, w, maps.shape[-1])
