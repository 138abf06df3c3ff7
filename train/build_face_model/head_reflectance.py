"""Specular and roughness prior maps of the head model, by face region.

Skin is not equally shiny everywhere: measurements of faces with a Torrance-Sparrow lobe
(Weyrich et al. 2006, "Analysis of human faces using a measurement-based skin reflectance
model") find the forehead and nose the most specular with the narrowest lobes, the cheeks
rougher, and the roughness of all face regions in m = 0.3-0.5. The values of :data:`REGIONS`
follow that ordering within those ranges; the specular albedo around skin's Fresnel
reflectance at normal incidence (n = 1.4: ((n - 1) / (n + 1))^2 = 0.028). They are priors for
refinement, which updates them per texel where the photo shows highlights.

Regions are soft per-vertex weights placed with the model's own iBUG-68 landmarks on its mean
shape (so the maps follow the head's UV layout, whatever it is), then rasterised into UV.
"""

from __future__ import annotations

import numpy as np
import torch

from facenet3d.facemodel import FaceModelArrays
from facenet3d.render.uv import UVRaster
from train.build_face_model.albedo import dilate_into_background

#: region -> (specular albedo, roughness).
REGIONS: dict[str, tuple[float, float]] = {
    "forehead": (0.036, 0.33),
    "nose": (0.040, 0.30),
    "chin": (0.032, 0.38),
    "lips": (0.030, 0.35),
    "cheeks": (0.026, 0.45),
    "head_neck": (0.024, 0.50),
}
#: Width (mm) of the soft transition between regions.
FALLOFF_MM = 8.0


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def region_weights(arrays: FaceModelArrays) -> dict[str, np.ndarray]:
    """Soft ``(V,)`` weights of each region of :data:`REGIONS` (summing to 1 per vertex)."""
    v = arrays.mean_shape.astype(np.float64)
    lm = v[arrays.landmarks68]
    face = arrays.regions.get("face", np.ones(len(v), bool)).astype(np.float64)
    brow_y = lm[17:27, 1].mean()
    half_width = np.abs(lm[[17, 26], 0]).max()
    nose = np.minimum(_segment_distance(v, lm[27], lm[30]), np.linalg.norm(v[:, None] - lm[31:36], axis=2).min(1))
    lips = np.linalg.norm(v[:, None] - lm[48:60], axis=2).min(1)
    soft = (lambda d, r: 1 / (1 + np.exp((d - r) / (FALLOFF_MM / 4))))  # noqa: E731
    raw = {
        "nose": soft(nose, 12.0),
        "lips": soft(lips, 6.0),
        "forehead": soft(brow_y + 8.0 - v[:, 1], 0.0) * soft(np.abs(v[:, 0]) - half_width, 0.0),
        "chin": soft(v[:, 1] - lm[57, 1] + 4.0, 0.0) * soft(np.abs(v[:, 0]) - np.abs(lm[[5, 11], 0]).max(), 0.0),
    }
    raw = {k: w * face for k, w in raw.items()}
    raw["cheeks"] = face * 0.35
    raw["head_neck"] = 1.0 - face + 1e-6
    total = sum(raw.values())
    return {k: (w / total).astype(np.float32) for k, w in raw.items()}


def reflectance_maps(arrays: FaceModelArrays, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``specular (size, size, 3)`` and ``roughness (size, size, 1)`` prior maps in the model's UV
    layout (extended past the charts so sampling at their borders stays on skin values)."""
    weights = region_weights(arrays)
    spec = sum(w * REGIONS[k][0] for k, w in weights.items())
    rough = sum(w * REGIONS[k][1] for k, w in weights.items())
    attr = torch.as_tensor(np.stack([spec, rough], -1), dtype=torch.float32)[None]
    uvr = UVRaster.build(torch.as_tensor(arrays.uvs), torch.as_tensor(arrays.uv_triangles), size)
    maps = uvr.sample_mesh_vertices(attr, torch.as_tensor(arrays.triangles))[0].numpy()
    maps = dilate_into_background(maps, uvr.covered.numpy())
    return np.repeat(maps[..., :1], 3, -1).astype(np.float32), maps[..., 1:].astype(np.float32)
