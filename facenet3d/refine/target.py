"""What a fit is fitted to: aligned crops with their landmarks and masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FitTarget:
    """A batch of ``B`` aligned face crops to reconstruct.

    Attributes:
        image: ``(B, S, S, 3)`` float RGB in [0, 1] (sRGB-encoded, as photos are).
        landmarks478: ``(B, 478, 3)`` MediaPipe landmarks in crop pixels (z: relative depth in
            pixel scale, positive away from the camera, as MediaPipe gives it).
        landmarks68: ``(B, 68, 2)`` iBUG-68 in crop pixels.
        skin_mask: ``(B, S, S)`` float, 1 on skin (eyes, brows, nostrils, mouth interior out).
    """

    image: torch.Tensor
    landmarks478: torch.Tensor
    landmarks68: torch.Tensor
    skin_mask: torch.Tensor

    @property
    def size(self) -> int:
        return self.image.shape[1]

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    @classmethod
    def from_arrays(cls, crop: np.ndarray, landmarks478: np.ndarray, landmarks68: np.ndarray,
                    skin_mask: np.ndarray, device: torch.device | str = "cpu") -> FitTarget:
        """From numpy arrays of one face (``(S, S, 3)`` uint8 crop, ...) or a batch of them."""

        def t(x: np.ndarray, batch_ndim: int) -> torch.Tensor:
            x = torch.as_tensor(np.asarray(x), device=device)
            return x[None] if x.ndim == batch_ndim - 1 else x

        image = t(crop, 4).float() / 255.0
        return cls(image, t(landmarks478, 3).float(), t(landmarks68, 3).float(), t(skin_mask, 3).float())

    def with_landmarks(self, landmarks478: torch.Tensor, landmarks68: torch.Tensor) -> FitTarget:
        """The same crops and masks with other landmarks (same shapes and units as the fields)."""
        return FitTarget(self.image, landmarks478, landmarks68, self.skin_mask)

    def index(self, i: int | slice) -> FitTarget:
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return FitTarget(self.image[sl], self.landmarks478[sl], self.landmarks68[sl], self.skin_mask[sl])
