"""Regional priors of skin specularity and roughness, as UV maps of any face model.

Skin is not equally shiny everywhere. Weyrich et al., "Analysis of human faces using a
measurement-based skin reflectance model" (SIGGRAPH 2006), fitted Torrance-Sparrow parameters
per face region for 149 subjects: the forehead and the nose (the "T-zone", where sebaceous glands
are densest) have the strongest specular lobes and the lowest roughness, the cheeks weaker and
broader ones. Ghosh et al., "Practical modeling and acquisition of layered facial reflectance"
(SIGGRAPH Asia 2008) measured the same ordering of specular roughness. The factors below are
round numbers of ours that reproduce that ordering at a modest contrast around the fitted
global values; they are priors, and stage C moves away from them where the photo shows
highlights.

Regions come from the model itself, not from a UV layout: every vertex of the mean shape gets
coordinates in a frame built from the model's iBUG-68 landmarks (origin between the eyes, unit =
the distance between the eye centres, +y towards the brows, +z out of the face), soft boxes in
that frame give per-vertex T-zone and cheek weights, and these are rasterised into the model's
UV layout (:class:`~facenet3d.render.uv.UVRaster`). Any model with iBUG-68 landmarks and UVs gets
its own maps; the model's ``skin`` region, when it has one, keeps eyes, brows and lips out.
"""

from __future__ import annotations

import weakref

import torch

from facenet3d.facemodel import MorphableModel
from facenet3d.render.uv import UVRaster

#: Specular-albedo factor of each region relative to the face's global value (T-zone shinier).
SPECULAR_FACTORS: dict[str, float] = {"tzone": 1.4, "cheeks": 0.8}
#: Roughness factor of each region relative to the face's global value (cheeks rougher).
ROUGHNESS_FACTORS: dict[str, float] = {"tzone": 0.85, "cheeks": 1.15}
#: Region names, in the order of the channels of :func:`uv_region_weights`.
REGIONS: tuple[str, ...] = ("tzone", "cheeks")

# iBUG-68 groups (0-based): brows, eyes, nose, mouth.
_BROWS, _EYE_A, _EYE_B = range(17, 27), range(36, 42), range(42, 48)
_NOSE_TIP, _NOSE_BOTTOM, _MOUTH = (30,), range(31, 36), range(48, 60)
_SOFT = 0.06  # edge width of the soft boxes, in eye distances (about 4 mm)


def _mean_point(points: torch.Tensor, valid: torch.Tensor, group: range | tuple[int, ...]) -> torch.Tensor:
    idx = torch.tensor(list(group), device=points.device)
    ok = valid[idx]
    if not bool(ok.any()):
        raise ValueError(f"the model's landmarks68 lack every point of {list(group)}: no face frame")
    return points[idx][ok].mean(0)


def face_frame_coordinates(model: MorphableModel) -> torch.Tensor:
    """Mean-shape vertices in the landmark frame, ``(V, 3)`` in eye distances.

    x: along the line from one eye centre to the other (sign arbitrary: the regions are
    symmetric); y: up, towards the brows, orthogonal to x; z: out of the face, 0 at the nose tip.
    """
    lm_idx = model.landmarks68
    valid = lm_idx >= 0
    v = model.mean_shape.float()
    points = v[lm_idx.clamp_min(0)]
    eye_a, eye_b = _mean_point(points, valid, _EYE_A), _mean_point(points, valid, _EYE_B)
    origin = 0.5 * (eye_a + eye_b)
    iod = (eye_b - eye_a).norm().clamp_min(1e-6)
    ex = (eye_b - eye_a) / iod
    up = origin - _mean_point(points, valid, _MOUTH)
    ey = torch.nn.functional.normalize(up - (up @ ex) * ex, dim=0)
    ez = torch.linalg.cross(ex, ey)
    tip = _mean_point(points, valid, _NOSE_TIP)
    if (tip - origin) @ ez < 0:  # the nose sticks out of the face: +z must point its way
        ez = -ez
    rel = v - origin
    return torch.stack([rel @ ex, rel @ ey, (v - tip) @ ez], -1) / iod


def _box(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Soft indicator of ``lo < x < hi`` (logistic edges of width :data:`_SOFT`)."""
    return torch.sigmoid((x - lo) / (_SOFT / 4)) * torch.sigmoid((hi - x) / (_SOFT / 4))


def vertex_region_weights(model: MorphableModel) -> torch.Tensor:
    """Per-vertex weights in ``[0, 1]`` of the regions :data:`REGIONS`, ``(V, 2)``.

    T-zone: the forehead (from the brows to about one eye distance above them, between the
    temples) and the nose (bridge to tip); cheeks: below the eyes and above the mouth corners,
    outside the nose and the mouth. Vertices far behind the nose tip (ears, the back of a full
    head) and, where the model names a ``skin`` region, vertices outside it get zero.
    """
    coords = face_frame_coordinates(model)
    x, y, z = coords.unbind(-1)
    ax = x.abs()
    lm_idx = model.landmarks68
    y_lm = coords.new_full((68,), float("nan"))
    y_lm[lm_idx >= 0] = y[lm_idx[lm_idx >= 0]]

    def level(group: range | tuple[int, ...]) -> float:
        vals = y_lm[list(group)]
        return float(vals[~vals.isnan()].mean())

    brow, nose, mouth = level(_BROWS), level(_NOSE_BOTTOM), level(_MOUTH)
    forehead = _box(y, brow + 0.08, brow + 1.1) * _box(x, -0.85, 0.85)
    nose_w = _box(y, nose - 0.05, brow) * _box(x, -0.22, 0.22)
    tzone = torch.maximum(forehead, nose_w)
    cheeks = _box(ax, 0.42, 1.05) * _box(y, mouth + 0.1, -0.35)
    front = _box(z, -0.95, 10.0)  # cheeks sit ~0.6 eye distances behind the nose tip, ears ~1.3
    weights = torch.stack([tzone, cheeks], -1) * front[:, None]
    if "skin" in model.region_names:
        # Softened over the mesh so that the prior maps have no jagged edge at the brows or lips.
        skin = _smooth_over_mesh(model.region("skin").to(weights.dtype), model.triangles, iterations=3)
        weights = weights * skin[:, None]
    return weights


def _smooth_over_mesh(values: torch.Tensor, triangles: torch.Tensor, iterations: int) -> torch.Tensor:
    """``(V,)`` values averaged with their mesh neighbours ``iterations`` times (one ring per step)."""
    tri = triangles.to(values.device)
    count = torch.zeros_like(values).index_add_(0, tri.reshape(-1), torch.ones(tri.numel(), dtype=values.dtype,
                                                                              device=values.device))
    for _ in range(iterations):
        face_mean = values[tri].mean(1, keepdim=True).expand(-1, 3).reshape(-1)
        values = torch.zeros_like(values).index_add_(0, tri.reshape(-1), face_mean) / count.clamp_min(1.0)
    return values


def uv_region_weights(model: MorphableModel, size: int) -> torch.Tensor:
    """The region weights of :func:`vertex_region_weights` rasterised into the model's UV layout.

    Returns:
        ``(size, size, 2)`` (row 0 = ``v = 1``), channels :data:`REGIONS`; zero outside the UV
        charts. Cached per model and size (shared: do not modify it in place).
    """
    per_model = _UV_WEIGHTS.setdefault(model, {})
    key = (size, model.uvs.device, model.uvs._version, model.mean_shape._version)
    if key not in per_model:
        raster = UVRaster.build(model.uvs.cpu(), model.uv_triangles.cpu(), size)
        weights = raster.sample_mesh_vertices(vertex_region_weights(model).cpu()[None], model.triangles.cpu())
        per_model.clear()
        per_model[key] = weights[0].clamp(0.0, 1.0).to(model.uvs.device)
    return per_model[key]


# Rasterising the weights costs ~0.1 s: done once per model (held weakly: no leak) and map size.
_UV_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def regional_prior(global_value: torch.Tensor, weights: torch.Tensor, factors: dict[str, float]) -> torch.Tensor:
    """A prior map: ``global_value`` scaled per region.

    Args:
        global_value: ``(B,)`` or ``(B, T, T, 1)`` the face's fitted value (e.g. stage B's roughness).
        weights: ``(T, T, R)`` :func:`uv_region_weights`.
        factors: region name -> factor (:data:`SPECULAR_FACTORS`, :data:`ROUGHNESS_FACTORS`).

    Returns:
        ``(B, T, T, 1)``: ``global * (1 + sum_r (factor_r - 1) w_r)``.
    """
    f = weights.new_tensor([factors.get(name, 1.0) - 1.0 for name in REGIONS])
    scale = 1.0 + (weights * f).sum(-1, keepdim=True)  # (T, T, 1)
    if global_value.ndim == 1:
        global_value = global_value[:, None, None, None]
    return global_value * scale[None]


#: Skin's Fresnel reflectance at normal incidence (refractive index 1.4: Tuchin, "Tissue Optics";
#: Donner and Jensen 2006): ((n - 1) / (n + 1))^2.
SKIN_F0 = 0.028
#: Skin's roughness: mid-range of the Torrance-Sparrow roughness Weyrich et al. 2006 fitted to faces
#: (m = 0.3-0.5 across regions).
SKIN_ROUGHNESS = 0.4


def _model_map(value: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """A model's UV map ``(H, W, C)`` resampled to ``(size, size, C)``; None unless it is a UV map."""
    if value is None or value.ndim != 3:
        return None
    if value.shape[0] != size or value.shape[1] != size:
        value = torch.nn.functional.interpolate(value.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                                align_corners=False)[0].permute(1, 2, 0)
    return value


def _is_flat(value: torch.Tensor, covered: torch.Tensor) -> bool:
    inside = value[covered]
    return inside.numel() == 0 or float(inside.std()) <= 1e-3 * max(float(inside.abs().mean()), 1e-6)


def reflectance_priors(model: MorphableModel, specular_scale: torch.Tensor, roughness: torch.Tensor, size: int,
                       covered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-texel prior maps of specular albedo and roughness for faces of ``model``.

    A model that ships spatially varying maps (``specular_mean`` / ``roughness_mean`` as UV maps)
    has its regional priors built in: they are used, scaled by the face's fitted global values.
    A model whose maps are constant (or absent) gets the regional factors of this module.

    Args:
        model: a face model with UVs and iBUG-68 landmarks.
        specular_scale: ``(B, 1)`` the face's scale of the model's specular albedo
            (:attr:`FaceParams.specular`).
        roughness: ``(B, 1)`` the face's fitted global roughness.
        size: map size ``T``.
        covered: ``(T, T)`` bool texels inside the UV charts.

    Returns:
        ``specular (B, T, T, 1)`` and ``roughness (B, T, T, 1)``.
    """
    b = specular_scale.shape[0]
    weights = None

    def regions() -> torch.Tensor:
        return uv_region_weights(model, size).to(specular_scale)

    spec_map = _model_map(model.specular_mean, size)
    if spec_map is None:
        spec_map = specular_scale.new_full((size, size, 1), SKIN_F0)
    spec_map = spec_map.mean(-1, keepdim=True)  # specular reflection of a dielectric is colourless
    spec = spec_map[None] * specular_scale[:, None, None, :]
    if _is_flat(spec_map, covered):
        weights = regions()
        spec = regional_prior(spec, weights, SPECULAR_FACTORS)
    rough_map = _model_map(getattr(model, "roughness_mean", None), size)
    if rough_map is not None and not _is_flat(rough_map, covered):
        # The model's own pattern, at the level of the face's fitted roughness.
        rough = rough_map[None] * (roughness / rough_map[covered].mean().clamp_min(1e-3))[:, None, None, :]
    else:
        weights = regions() if weights is None else weights
        rough = regional_prior(roughness[:, 0].expand(b), weights, ROUGHNESS_FACTORS)
    return spec, rough
