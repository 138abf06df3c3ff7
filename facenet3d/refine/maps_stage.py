"""Stage C: per-texel UV maps — diffuse albedo, specular albedo, roughness and displacement.

Starting from stage B's statistical albedo and the specular/roughness priors, every texel of
the maps is optimised through the renderer, regularised so that what the photo does not
determine stays at the prior:

- *smoothness*: squared Laplacian of the albedo change and of the displacement, total
  variation of specular and roughness;
- *symmetry*: difference to the left/right mirrored maps (for a symmetric UV layout, as the
  default model's);
- *consistency*: squared change from the statistical albedo.

Values stay physically valid by construction: albedo in [0, 1] (clamped), specular F0 in
[0, 0.08] (0.028 is skin) and roughness in [0.1, 1] (sigmoids), displacement within
``max_displacement_mm`` (tanh). The displacement moves the mesh along its normals (sampled at
the vertices' UVs); its slopes at texel resolution become the tangent-space normal map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facenet3d.facemodel import MorphableModel
from facenet3d.losses import laplacian_smoothness, symmetry_loss, total_variation
from facenet3d.params import FaceParams
from facenet3d.refine.config import MapStageConfig
from facenet3d.refine.optim import minimise
from facenet3d.refine.photometric_stage import ScaledTarget, photometric_error, render_params
from facenet3d.refine.target import FitTarget
from facenet3d.render import Renderer, texture
from facenet3d.render.uv import UVRaster

MAX_SPECULAR = 0.08
MIN_ROUGHNESS, MAX_ROUGHNESS = 0.1, 1.0


@dataclass
class FaceMaps:
    """UV maps of ``B`` faces (row 0 = ``v = 1``; linear values).

    Attributes:
        albedo: ``(B, T, T, 3)`` diffuse albedo, linear RGB.
        specular: ``(B, T, T, 3)`` specular albedo (F0).
        roughness: ``(B, T, T, 1)``.
        displacement: ``(B, T, T, 1)`` mm along the surface normal.
        normal: ``(B, T, T, 3)`` unit tangent-space normals from the displacement (+z out).
    """

    albedo: torch.Tensor
    specular: torch.Tensor
    roughness: torch.Tensor
    displacement: torch.Tensor
    normal: torch.Tensor


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


def fit_maps(model: MorphableModel, target: FitTarget, config: MapStageConfig, start: FaceParams,
             renderer: Renderer | None = None, symmetric_uv: bool | None = None, progress=None) -> FaceMaps:
    """Run stage C from stage B's parameters.

    Args:
        model: a face model with a UV albedo space.
        target: the crops.
        config: the stage's settings.
        start: parameters (geometry, light and statistical albedo stay fixed).
        renderer: reused renderer for the model (built when None).
        symmetric_uv: whether the UV layout mirrors about ``u = 0.5`` (default: the model's
            metadata ``uv_symmetric``).
        progress: optional callable ``(step, loss)``.
    """
    if model.albedo_space != "uv":
        raise ValueError("UV map refinement needs a face model with a UV albedo space")
    if renderer is None or renderer.shading != "pixel":  # per-texel roughness is shaded per pixel
        renderer = Renderer.from_model(model, shading="pixel").to(start.identity.device)
    symmetric = bool(model.metadata.get("uv_symmetric", False)) if symmetric_uv is None else symmetric_uv
    scaled = ScaledTarget.from_target(target, config.resolution)
    b = start.batch_size
    with torch.no_grad():
        base = model.albedo(start.albedo).clamp(0, 1)  # (B, T, T, 3)
        t = base.shape[1]
        spec0 = (model.specular() * start.specular[:, :, None, None]) if model.specular_mean is not None \
            else base.new_full((b, t, t, 3), 0.028)
        spec0 = spec0.expand(b, -1, -1, -1).clamp(1e-4, MAX_SPECULAR - 1e-4)
        rough0 = start.roughness[:, None, None, :].expand(b, t, t, 1).clamp(MIN_ROUGHNESS + 1e-3, MAX_ROUGHNESS - 1e-3)
        normals_model = model.vertex_normals(model.decode(start.identity, start.expression))
    covered = UVRaster.build(model.uvs, model.uv_triangles, t).covered.to(base.device)
    # Vertices sample the displacement map at their UV (the first UV of each vertex).
    vertex_uv = torch.zeros(model.num_vertices, 2, device=base.device)
    vertex_uv[model.triangles.reshape(-1)] = model.uvs[model.uv_triangles.reshape(-1)]
    vertex_uv = torch.stack([vertex_uv[:, 0], 1 - vertex_uv[:, 1]], -1)[None, :, None, :].expand(b, -1, -1, -1)

    d_albedo = torch.zeros_like(base, requires_grad=True)
    spec_logit = _logit(spec0 / MAX_SPECULAR).clone().requires_grad_(True)
    rough_logit = _logit((rough0 - MIN_ROUGHNESS) / (MAX_ROUGHNESS - MIN_ROUGHNESS)).clone().requires_grad_(True)
    disp_raw = torch.zeros(b, t, t, 1, device=base.device, requires_grad=True)
    mask = covered

    def maps() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        albedo = (base + d_albedo).clamp(0.0, 1.0)
        spec = MAX_SPECULAR * torch.sigmoid(spec_logit)
        rough = MIN_ROUGHNESS + (MAX_ROUGHNESS - MIN_ROUGHNESS) * torch.sigmoid(rough_logit)
        disp = config.max_displacement_mm * torch.tanh(disp_raw)
        return albedo, spec, rough, disp

    def loss_fn() -> torch.Tensor:
        albedo, spec, rough, disp = maps()
        disp_v = texture(disp, vertex_uv, boundary_mode="clamp")[:, :, 0]  # (B, V, 1)
        out, _ = render_params(model, renderer, start, scaled.size, albedo_map=albedo, specular_map=spec,
                               roughness_map=rough, vertex_offsets=disp_v * normals_model)
        loss = config.photometric_weight * photometric_error(out, scaled, config.robust_scale)
        loss = loss + config.smoothness_weight * 100.0 * (laplacian_smoothness(d_albedo, mask)
                                                          + laplacian_smoothness(disp / 10.0, mask))
        loss = loss + config.smoothness_weight * (total_variation(spec / MAX_SPECULAR, mask)
                                                  + total_variation(rough, mask))
        loss = loss + config.consistency_weight * (d_albedo ** 2 * mask[None, ..., None]).flatten(1).mean(1)
        loss = loss + config.displacement_weight * ((disp / config.max_displacement_mm) ** 2).flatten(1).mean(1)
        if symmetric:
            loss = loss + config.symmetry_weight * (symmetry_loss(albedo, mask) + symmetry_loss(disp / 10.0, mask))
        return loss

    minimise([d_albedo, spec_logit, rough_logit, disp_raw], loss_fn, config.iterations, config.lr, progress,
             anneal=False)
    with torch.no_grad():
        albedo, spec, rough, disp = maps()
        normal = displacement_normals(disp, mm_per_uv(model) / t)
    return FaceMaps(albedo=albedo, specular=spec, roughness=rough, displacement=disp, normal=normal)


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
