"""Stage C: per-texel UV maps — diffuse albedo, specular albedo, roughness and displacement.

Starting from stage B's statistical albedo and the regional specular/roughness priors
(:mod:`facenet3d.refine.priors`), every texel of the maps is optimised through the renderer,
regularised so that what the photo does not determine stays at the prior.

*What the photo may teach.* The data term covers the skin mask of the photo (eyes, brows,
nostrils and mouth interior are out) and, within it, only pixels that agree with stage B's
render: residuals are scored against their robust spread (median and MAD per face), and pixels
much darker than the statistical face (hair over the forehead, glasses frames, cast shadows) or
of an unexpected colour are rejected (:func:`outlier_weights`). Much brighter pixels
(highlights) stay in the data term, for the specular and roughness maps, but are not trusted
for the albedo. The trusted pixels are splatted into UV and blurred into a per-texel confidence
in ``[0, 1]`` (:func:`texel_confidence`); the albedo is ``statistical + confidence x change``, so
texels that no trusted pixel sees keep the statistical albedo and the transition is as smooth as
the blur — no seams.

*Greyscale photos* (all channels equal) constrain luma only: the statistical albedo's chroma is
removed, the albedo change is one value for the three channels and the light is colourless, so
the maps come out grey.

*Regularisers*: squared Laplacian of the albedo change, of the displacement and of the
specular/roughness deviations from their priors; squared deviation from the priors (specular,
roughness) and from the statistical albedo (consistency); left/right symmetry for a symmetric UV
layout (as the default model's).

Values stay physically valid by construction: albedo in [0, 1] (clamped), specular F0 in
[0, 0.08] (0.028 is skin; colourless, one channel) and roughness in [0.1, 1] (sigmoids),
displacement within ``max_displacement_mm`` (tanh). The displacement moves the mesh along its
normals (sampled at the vertices' UVs); its slopes at texel resolution become the tangent-space
normal map.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from facenet3d.facemodel import MorphableModel
from facenet3d.facemodel.uvmaps import upsample_maps
from facenet3d.losses import quadratic_map_terms
from facenet3d.params import FaceParams
from facenet3d.refine.config import MapStageConfig
from facenet3d.refine.optim import minimise
from facenet3d.refine.photometric_stage import (
    ScaledTarget,
    colourless_light,
    grey_albedo,
    greyscale_faces,
    photometric_error,
    render_params,
    to_luma,
)
from facenet3d.refine.priors import reflectance_priors
from facenet3d.refine.target import FitTarget
from facenet3d.refine.visible_part import VisiblePart
from facenet3d.render import texture
from facenet3d.render.color import linear_to_srgb
from facenet3d.render.interpolate import interpolate
from facenet3d.render.rasterize import fragments_of
from facenet3d.render.uv import UVRaster

MAX_SPECULAR = 0.08
MIN_ROUGHNESS, MAX_ROUGHNESS = 0.1, 1.0
#: Residual spread (sRGB) below which a face's MAD is not trusted: JPEG noise and model misfit
#: leave at least this much, and a tighter scale would reject clean skin.
RESIDUAL_FLOOR = 0.02
#: Blur of the trusted-pixel density in UV, in pixel footprints (the texels one photo pixel spans):
#: wide enough to fill the gaps between the splats of neighbouring pixels, narrow enough to keep a
#: hair band out.
CONFIDENCE_BLUR = 1.5
#: Blur of the confidence itself, in pixel footprints: the width of the blend between the photo's
#: albedo and the statistical one where trusted data ends, so that no seam shows.
FALLBACK_BLUR = 2.0


@dataclass
class FaceMaps:
    """UV maps of ``B`` faces (row 0 = ``v = 1``; linear values).

    Attributes:
        albedo: ``(B, T, T, 3)`` diffuse albedo, linear RGB.
        specular: ``(B, T, T, 3)`` specular albedo (F0).
        roughness: ``(B, T, T, 1)``.
        displacement: ``(B, T, T, 1)`` mm along the surface normal.
        normal: ``(B, T, T, 3)`` unit tangent-space normals from the displacement (+z out).
        confidence: ``(B, T, T, 1)`` how much of the albedo the photo determined (stage C's
            :func:`texel_confidence`: 0 = the statistical albedo), or None (statistical maps).
    """

    albedo: torch.Tensor
    specular: torch.Tensor
    roughness: torch.Tensor
    displacement: torch.Tensor
    normal: torch.Tensor
    confidence: torch.Tensor | None = None


def _logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-4, 1 - 1e-4)
    return torch.log(x / (1 - x))


def mm_per_uv(model: MorphableModel) -> float:
    """Average millimetres of the mean shape per unit of UV (to turn displacement slopes into normals)."""
    tri, uvt = model.triangles, model.uv_triangles
    v, uv = model.mean_shape, model.uvs
    e3 = (v[tri[:, 1]] - v[tri[:, 0]]).norm(dim=-1) + (v[tri[:, 2]] - v[tri[:, 0]]).norm(dim=-1)
    e2 = (uv[uvt[:, 1]] - uv[uvt[:, 0]]).norm(dim=-1) + (uv[uvt[:, 2]] - uv[uvt[:, 0]]).norm(dim=-1)
    return float(e3.sum() / e2.sum().clamp_min(1e-12))


def displacement_normals(displacement: torch.Tensor, mm_per_texel: float) -> torch.Tensor:
    """Tangent-space normals ``(B, T, T, 3)`` of a displacement map ``(B, T, T, 1)`` in mm.

    Tangent +x is +u (texel columns), +y is +v (up the map, i.e. decreasing rows): the
    OpenGL normal-map convention the exporters write.
    """
    d = displacement[..., 0]
    ddu = torch.zeros_like(d)
    ddv = torch.zeros_like(d)
    ddu[:, :, 1:-1] = (d[:, :, 2:] - d[:, :, :-2]) / (2 * mm_per_texel)
    ddv[:, 1:-1, :] = (d[:, :-2, :] - d[:, 2:, :]) / (2 * mm_per_texel)  # rows grow downwards
    n = torch.stack([-ddu, -ddv, torch.ones_like(d)], -1)
    return torch.nn.functional.normalize(n, dim=-1)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, T, T, C)`` maps (zero beyond the borders), same shape."""
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    b, h, w, c = maps.shape
    img = maps.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    img = torch.nn.functional.conv2d(img, k.view(1, 1, 1, -1), padding=(0, radius))
    img = torch.nn.functional.conv2d(img, k.view(1, 1, -1, 1), padding=(radius, 0))
    return img.reshape(b, c, h, w).permute(0, 2, 3, 1)


def _ramp(x: torch.Tensor, start: float) -> torch.Tensor:
    """0 below ``start``, rising linearly to 1 at ``1.5 start``."""
    return ((x - start) / (0.5 * start)).clamp(0.0, 1.0)


def _smoothstep(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    t = ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _erode(weights: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` minimum over 3x3 neighbourhoods: a rejected region grows by a pixel, so the
    blended edge of hair or a frame is rejected with it."""
    return -torch.nn.functional.max_pool2d(-weights[:, None], 3, stride=1, padding=1)[:, 0]


def outlier_weights(rendered: torch.Tensor, photo: torch.Tensor, mask: torch.Tensor, threshold: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel weights of the photo as evidence of skin, from its residual against a render.

    Residuals ``photo - rendered`` are split into brightness (channel mean) and colour (the
    rest); each face's brightness residuals are scored against their median and MAD (times 1.4826,
    at least :data:`RESIDUAL_FLOOR`) over ``mask``, colour residuals likewise. Beyond
    ``threshold`` robust deviations the weight ramps down to 0 (at 1.5 ``threshold``), and
    rejected regions are grown by one pixel.

    Args:
        rendered: ``(B, R, R, 3)`` sRGB render of the statistical face (stage B's result).
        photo: ``(B, R, R, 3)`` sRGB photo.
        mask: ``(B, R, R)`` skin pixels the render covers (the statistics' support).
        threshold: robust z-score where rejection starts; ``<= 0`` turns rejection off.

    Returns:
        ``data (B, R, R)``: 0 on darker-than-expected or off-colour pixels (hair, frames,
        shadows), 1 elsewhere; ``trusted (B, R, R)``: ``data`` with brighter-than-expected pixels
        (highlights) rejected too — the pixels that may teach the albedo.
    """
    ones = torch.ones_like(mask)
    if threshold <= 0:
        return ones, ones
    residual = photo - rendered
    bright = residual.mean(-1)
    colour = (residual - bright[..., None]).norm(dim=-1)
    data, trusted = [], []
    for i in range(mask.shape[0]):
        inside = mask[i] > 0.5
        if int(inside.sum()) < 16:
            data.append(ones[i])
            trusted.append(ones[i])
            continue
        b_in, c_in = bright[i][inside], colour[i][inside]
        b_med, c_med = b_in.median(), c_in.median()
        b_scale = (1.4826 * (b_in - b_med).abs().median()).clamp_min(RESIDUAL_FLOOR)
        c_scale = (1.4826 * (c_in - c_med).abs().median()).clamp_min(RESIDUAL_FLOOR)
        z = (bright[i] - b_med) / b_scale
        z_colour = (colour[i] - c_med) / c_scale
        keep = (1 - _ramp(-z, threshold)) * (1 - _ramp(z_colour, threshold))
        data.append(keep)
        trusted.append(keep * (1 - _ramp(z, threshold)))
    return _erode(torch.stack(data)), _erode(torch.stack(trusted))


def texel_confidence(pixel_uv: torch.Tensor, trusted: torch.Tensor, seen: torch.Tensor, size: int) -> torch.Tensor:
    """How well trusted photo pixels cover each texel, ``(B, T, T, 1)`` in ``[0, 1]``, smooth.

    Pixel weights are splatted to the texel under each pixel and blurred over
    :data:`CONFIDENCE_BLUR` pixel footprints (the median texel distance between neighbouring
    pixels, at least one texel); the density of all ``seen`` pixels sets the level of a fully
    observed texel (its median over the texels they reach), so the result depends neither on
    the face's size in the crop nor on the map's resolution. A texel at half that level of
    trusted density or more is fully confident; below 15 % of it, not at all (grazing views,
    hidden sides, rejected hair), with a smoothstep between; a last blur over
    :data:`FALLBACK_BLUR` footprints widens the transitions into gentle ramps.

    Args:
        pixel_uv: ``(B, R, R, 2)`` texture coordinates of each pixel (row 0 of the map at ``v = 0``,
            as the renderer samples maps).
        trusted: ``(B, R, R)`` weights of the pixels that may teach the albedo.
        seen: ``(B, R, R)`` weights of every skin pixel of the face.
        size: map size ``T``.
    """
    b = pixel_uv.shape[0]
    col = (pixel_uv[..., 0] * size).long().clamp(0, size - 1)
    row = (pixel_uv[..., 1] * size).long().clamp(0, size - 1)
    index = (row * size + col).flatten(1)
    # Texels between horizontally neighbouring seen pixels: the footprint of a pixel in the map.
    both = (seen[:, :, 1:] > 0.5) & (seen[:, :, :-1] > 0.5)
    step = (pixel_uv[:, :, 1:] - pixel_uv[:, :, :-1]).norm(dim=-1)[both] * size
    footprint = max(float(step.median()), 1.0) if step.numel() else 1.0

    def density(weights: torch.Tensor) -> torch.Tensor:
        hits = weights.new_zeros(b, size * size).scatter_add_(1, index, weights.flatten(1))
        return gaussian_blur(hits.view(b, size, size, 1), CONFIDENCE_BLUR * footprint)

    trusted_density, seen_density = density(trusted * seen), density(seen)
    level = torch.stack([d[d > 0.05 * d.max()].median() if bool((d > 0).any()) else d.new_tensor(1.0)
                         for d in seen_density])[:, None, None, None]
    return gaussian_blur(_smoothstep(trusted_density, 0.15 * level, 0.5 * level), FALLBACK_BLUR * footprint)


def fit_maps(model: MorphableModel, target: FitTarget, config: MapStageConfig, start: FaceParams,
             symmetric_uv: bool | None = None, progress=None) -> FaceMaps:
    """Run stage C from stage B's parameters.

    Args:
        model: a face model with a UV albedo space.
        target: the crops.
        config: the stage's settings.
        start: parameters (geometry, light and statistical albedo stay fixed).
        symmetric_uv: whether the UV layout mirrors about ``u = 0.5`` (default: the model's
            metadata ``uv_symmetric``).
        progress: optional callable ``(step, loss)``.
    """
    if model.albedo_space != "uv":
        raise ValueError("UV map refinement needs a face model with a UV albedo space")
    symmetric = bool(model.metadata.get("uv_symmetric", False)) if symmetric_uv is None else symmetric_uv
    scaled = ScaledTarget.from_target(target, config.resolution)
    grey = greyscale_faces(target.image)
    start = start.clone()
    start.sh = colourless_light(start.sh, grey)  # a grey photo says nothing of the light's colour
    b = start.batch_size
    part = VisiblePart.of(model, start, scaled.size)
    renderer = part.renderer(model, shading="pixel")  # per-texel roughness is shaded per pixel
    full_size = model.albedo_mean.shape[0]
    # The photo resolves detail no finer than its pixels, each of which covers several texels of a
    # large atlas: the maps are fitted at map_size and only the change they make is upsampled, on
    # top of the full-size statistical albedo.
    t = min(config.map_size or full_size, full_size)
    with torch.no_grad():
        base = _statistical_albedo(model, start.albedo, grey, t)  # (B, T, T, 3)
        covered = UVRaster.build(model.uvs, model.uv_triangles, t).covered.to(base.device)
        spec_prior, rough_prior = reflectance_priors(model, start.specular, start.roughness, t, covered)
        spec_prior = spec_prior.clamp(1e-3, MAX_SPECULAR - 1e-3)
        rough_prior = rough_prior.clamp(MIN_ROUGHNESS + 1e-2, MAX_ROUGHNESS - 1e-2)
        normals_model = model.vertex_normals(model.decode(start.identity, start.expression))[:, part.vertices]
        # Stage B's face, rendered with the priors: what the photo is checked against.
        out0 = render_params(model, renderer, start, scaled.size, albedo_map=base,
                             specular_map=spec_prior, roughness_map=rough_prior, part=part)
        rendered0 = linear_to_srgb(out0.image)
        rendered0 = torch.where(grey[:, None, None, None], to_luma(rendered0), rendered0)
        seen = scaled.skin * out0.mask[..., 0]
        data_w, trusted = outlier_weights(rendered0, scaled.image, seen, config.outlier_threshold)
        pixel_uv = interpolate(renderer.uvs, out0.rast, renderer.uv_triangles)
        # The displacement moves the mesh by a fraction of a pixel: which triangle each pixel shows
        # is found once, here, and every step recomputes only its barycentrics.
        visible = fragments_of(out0.rast)
        confidence = texel_confidence(pixel_uv, trusted, seen, t) * covered[None, ..., None]
    # Vertices sample the displacement map at their UV (the first UV of each vertex).
    vertex_uv = torch.zeros(model.num_vertices, 2, device=base.device)
    vertex_uv[model.triangles.reshape(-1)] = model.uvs[model.uv_triangles.reshape(-1)]
    vertex_uv = torch.stack([vertex_uv[:, 0], 1 - vertex_uv[:, 1]], -1)[part.vertices]
    vertex_uv = vertex_uv[None, :, None, :].expand(b, -1, -1, -1)

    d_albedo = torch.zeros_like(base, requires_grad=True)
    spec_logit = _logit(spec_prior / MAX_SPECULAR).clone().requires_grad_(True)
    rough_logit = _logit((rough_prior - MIN_ROUGHNESS) / (MAX_ROUGHNESS - MIN_ROUGHNESS)).clone().requires_grad_(True)
    disp_raw = torch.zeros(b, t, t, 1, device=base.device, requires_grad=True)
    mask = covered

    any_grey = bool(grey.any())
    # A texel's Laplacian grows with the square of the texel size: scaled so that a coarser fit
    # penalises the same surface curvature as one at the model's own size.
    smoothness = config.smoothness_weight * 100.0 * (t / full_size) ** 4

    def maps() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        d = d_albedo
        if any_grey:
            d = torch.where(grey[:, None, None, None], d.mean(-1, keepdim=True).expand_as(d), d)
        change = confidence * d  # untrusted texels keep the statistical albedo
        albedo = (base + change).clamp(0.0, 1.0)
        spec = MAX_SPECULAR * torch.sigmoid(spec_logit)
        rough = MIN_ROUGHNESS + (MAX_ROUGHNESS - MIN_ROUGHNESS) * torch.sigmoid(rough_logit)
        disp = config.max_displacement_mm * torch.tanh(disp_raw)
        return albedo, spec, rough, disp, change

    def loss_fn() -> torch.Tensor:
        albedo, spec, rough, disp, change = maps()
        disp_v = texture(disp, vertex_uv, boundary_mode="clamp")[:, :, 0]  # (B, V, 1)
        out = render_params(model, renderer, start, scaled.size, albedo_map=albedo,
                            specular_map=spec, roughness_map=rough,
                            vertex_offsets=disp_v * normals_model, part=part, visible=visible)
        loss = config.photometric_weight * photometric_error(out, scaled, config.robust_scale, grey, data_w)
        # Specular and roughness as relative deviations from their priors.
        spec_dev, rough_dev = spec / spec_prior - 1, rough / rough_prior - 1
        # Smoothness of every map, closeness of specular and roughness to their priors and of the
        # albedo to the statistical one, left/right symmetry of the albedo and the displacement.
        sym = config.symmetry_weight if symmetric else 0.0
        loss = loss + quadratic_map_terms(
            [change, disp / 10.0, spec_dev, rough_dev, albedo], mask, (smoothness,) * 4 + (0.0,),
            (config.consistency_weight, 0.0, config.specular_prior_weight, config.roughness_prior_weight, 0.0),
            (0.0, sym, 0.0, 0.0, sym))
        loss = loss + config.displacement_weight * ((disp / config.max_displacement_mm) ** 2).flatten(1).mean(1)
        return loss

    minimise([d_albedo, spec_logit, rough_logit, disp_raw], loss_fn, config.iterations, config.lr, progress,
             anneal=False)
    with torch.no_grad():
        _, spec, rough, disp, change = maps()
        up = functools.partial(upsample_maps, size=(full_size, full_size))
        albedo = (_statistical_albedo(model, start.albedo, grey, full_size) + up(change)).clamp(0.0, 1.0)
        disp = up(disp)
        normal = displacement_normals(disp, mm_per_uv(model) / full_size)
        spec = up(spec).clamp(0.0, MAX_SPECULAR)
        rough = up(rough).clamp(MIN_ROUGHNESS, MAX_ROUGHNESS)
        confidence = up(confidence).clamp(0.0, 1.0)
    return FaceMaps(albedo=albedo, specular=spec.expand(-1, -1, -1, 3).contiguous(), roughness=rough,
                    displacement=disp, normal=normal, confidence=confidence)


def _statistical_albedo(model: MorphableModel, coefficients: torch.Tensor, grey: torch.Tensor, size: int
                        ) -> torch.Tensor:
    """The statistical albedo ``(B, size, size, 3)`` in ``[0, 1]``, grey for the faces flagged in ``grey``."""
    albedo = model.albedo(coefficients, size=size).clamp(0, 1)
    return torch.where(grey[:, None, None, None], grey_albedo(albedo), albedo)


def statistical_maps(model: MorphableModel, params: FaceParams) -> FaceMaps:
    """Maps of the statistical model alone (stages A/B, or the regressor): no displacement."""
    with torch.no_grad():
        albedo = model.albedo(params.albedo).clamp(0, 1)
        b, t = albedo.shape[0], albedo.shape[1]
        spec = (model.specular() * params.specular[:, :, None, None]).expand(b, -1, -1, -1) \
            if model.specular_mean is not None else albedo.new_full((b, t, t, 3), 0.028)
        rough = params.roughness[:, None, None, :].expand(b, t, t, 1)
        flat = torch.zeros(b, t, t, 3, device=albedo.device)
        flat[..., 2] = 1
        return FaceMaps(albedo, spec.clamp(0, MAX_SPECULAR), rough, albedo.new_zeros(b, t, t, 1), flat)


def to_numpy_maps(maps: FaceMaps, index: int = 0) -> dict[str, np.ndarray]:
    """One face's maps as numpy arrays for the exporters."""
    return {name: getattr(maps, name)[index].detach().cpu().numpy()
            for name in ("albedo", "specular", "roughness", "displacement", "normal")}
