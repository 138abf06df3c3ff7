"""The face model's albedo space resampled for training: per vertex, and as small UV maps.

Both are exact linear images of the model's UV albedo space (resampling is linear, so
``resample(mean + c . basis) = resample(mean) + c . resample(basis)``): they are computed
once, and a batch's albedo in them costs one small matrix product.

- **Per vertex** (:attr:`LinearSpace` from :func:`vertex_spaces`): each vertex takes the
  bilinear sample of the maps at its UV coordinate (averaged over its UV corners on seams).
  The default model has about one triangle per pixel of a 160 px crop, so a render with
  per-vertex albedo loses little, and it skips texture sampling (about a quarter of the
  render's time on CPU).
- **Small UV maps** (:func:`uv_spaces`): the albedo regularisers (symmetry, flatness) judge the
  map's layout, not its texels; at 64 x 64 they cost 1/16 of the full 256 x 256 maps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from facenet3d.facemodel import MorphableModel
from facenet3d.facemodel.uvmaps import upsample_maps
from facenet3d.render.uv import UVRaster


@dataclass
class LinearSpace:
    """``mean + coefficients . basis``: mean ``(*S)``, basis ``(K, *S)``."""

    mean: torch.Tensor
    basis: torch.Tensor | None

    def __call__(self, coefficients: torch.Tensor | None) -> torch.Tensor:
        """``(B, K)`` -> ``(B, *S)`` (the mean, with batch 1, for None or an empty basis)."""
        if coefficients is None or self.basis is None or self.basis.shape[0] == 0:
            return self.mean[None]
        k = self.basis.shape[0]
        return self.mean + (coefficients[:, :k] @ self.basis.reshape(k, -1)).view(-1, *self.mean.shape)

    def to(self, device: torch.device | str) -> LinearSpace:
        return LinearSpace(*(None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                             for f in fields(self)))


def _stack_maps(mean: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """``(1 + K, C, H, W)`` from a ``(H, W, C)`` mean and a ``(K, H, W, C)`` basis."""
    maps = mean[None] if basis is None else torch.cat([mean[None], basis])
    return maps.permute(0, 3, 1, 2)


def _split(maps: torch.Tensor, has_basis: bool) -> LinearSpace:
    return LinearSpace(maps[0], maps[1:] if has_basis else None)


def sample_at_vertices(maps: torch.Tensor, model: MorphableModel) -> torch.Tensor:
    """Bilinear samples of UV maps at the model's vertices.

    Args:
        maps: ``(N, C, H, W)`` maps, row 0 at the top (``v = 1``).
        model: a model with ``uvs`` and ``uv_triangles``.

    Returns:
        ``(N, V, C)``: per vertex, the mean of the samples at its UV corners (seam vertices have
        several).
    """
    corners_uv = model.uvs[model.uv_triangles.reshape(-1)]  # (3F, 2), v up
    grid = torch.stack([2 * corners_uv[:, 0] - 1, 1 - 2 * corners_uv[:, 1]], -1)  # texel centres at +0.5
    samples = F.grid_sample(maps, grid.view(1, 1, -1, 2).expand(maps.shape[0], -1, -1, -1),
                            mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]  # (N, C, 3F)
    index = model.triangles.reshape(-1)
    v = model.num_vertices
    total = samples.new_zeros(maps.shape[0], maps.shape[1], v).index_add_(2, index, samples)
    count = torch.zeros(v, dtype=samples.dtype, device=samples.device).index_add_(
        0, index, torch.ones_like(index, dtype=samples.dtype))
    return (total / count.clamp_min(1)).transpose(1, 2)


def vertex_spaces(model: MorphableModel) -> tuple[LinearSpace, torch.Tensor | None]:
    """The albedo space per vertex ``(V, 3)`` and the specular mean per vertex (or None).

    For a per-vertex model these are its own arrays.
    """
    if model.albedo_space == "vertex":
        return LinearSpace(model.albedo_mean, model.albedo_basis), model.specular_mean
    with torch.no_grad():
        # The basis may be coarser than the mean: each is sampled at its own size.
        mean = sample_at_vertices(_stack_maps(model.albedo_mean, None), model)[0]
        basis = (None if model.albedo_basis is None
                 else sample_at_vertices(model.albedo_basis.permute(0, 3, 1, 2), model))
        albedo = LinearSpace(mean, basis)
        specular = None
        if model.specular_mean is not None:
            specular = sample_at_vertices(_stack_maps(model.specular_mean, None), model)[0]
    return albedo, specular


def uv_spaces(model: MorphableModel, size: int) -> tuple[LinearSpace, torch.Tensor] | None:
    """The UV albedo space area-averaged to ``size x size`` and its chart mask ``(size, size)`` bool
    (None for a model without a UV albedo space)."""
    if model.albedo_space != "uv":
        return None
    with torch.no_grad():
        maps = _stack_maps(model.albedo_mean, None)
        if model.albedo_basis is not None:  # a coarser basis is brought to the mean's size first
            basis = upsample_maps(model.albedo_basis, model.albedo_mean.shape[:2])
            maps = torch.cat([maps, basis.permute(0, 3, 1, 2)])
        small = F.adaptive_avg_pool2d(maps, size).permute(0, 2, 3, 1).contiguous()
        mask = UVRaster.build(model.uvs.cpu(), model.uv_triangles.cpu(), size).covered.to(small.device)
    return _split(small, model.albedo_basis is not None), mask
