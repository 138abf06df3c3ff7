"""Specular and roughness maps shipped with the head model: the regional priors of refinement
(:mod:`facenet3d.refine.priors`: T-zone shinier and smoother, cheeks rougher, after Weyrich et
al. 2006) around skin's constants, rasterised once into the model's atlas.

One definition of the regions and factors serves both the shipped maps and refinement; shipping
them lets every consumer (exports of unrefined results, the ONNX runtime) use varying maps.
"""

from __future__ import annotations

import numpy as np
import torch
from facenet3d.train.build_face_model.albedo import dilate_into_background

from facenet3d.facemodel import FaceModelArrays
from facenet3d.facemodel.model import MorphableModel
from facenet3d.refine.priors import (
    ROUGHNESS_FACTORS,
    SKIN_F0,
    SKIN_ROUGHNESS,
    SPECULAR_FACTORS,
    regional_prior,
    uv_region_weights,
)
from facenet3d.render.uv import UVRaster


def reflectance_maps(arrays: FaceModelArrays, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``specular (size, size, 3)`` and ``roughness (size, size, 1)`` prior maps in the model's UV
    layout (extended past the charts so sampling at their borders stays on skin values)."""
    model = MorphableModel(arrays)
    weights = uv_region_weights(model, size)
    spec = regional_prior(torch.tensor([SKIN_F0]), weights, SPECULAR_FACTORS)[0].numpy()
    rough = regional_prior(torch.tensor([SKIN_ROUGHNESS]), weights, ROUGHNESS_FACTORS)[0].numpy()
    covered = UVRaster.build(torch.as_tensor(arrays.uvs), torch.as_tensor(arrays.uv_triangles), size).covered.numpy()
    maps = dilate_into_background(np.concatenate([spec, rough], -1), covered)
    return np.repeat(maps[..., :1], 3, -1).astype(np.float32), maps[..., 1:].astype(np.float32)
