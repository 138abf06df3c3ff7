"""Stage B: photometric fit through the renderer (SH light, statistical albedo, specular).

The crop is rendered with the current parameters and compared with the photo on the skin
mask (eyes, brows, nostrils and mouth interior excluded) with an outlier-robust colour
distance, so hair, glasses or a hand over the face stop pulling the fit once their error
saturates. Landmark terms keep the geometry registered and priors keep coefficients
plausible. The fit runs at ``resolution`` pixels (the crop camera scales with the crop, so
parameters are resolution independent).

A greyscale photo (all channels equal) says nothing about colour: for such faces the light is
kept colourless (its channels tied) and the render is compared with the photo in luma only, so
the statistical albedo keeps its prior chroma instead of trading colour against a tinted light.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facenet3d.decode import crop_camera, decode_face
from facenet3d.facemodel import MorphableModel
from facenet3d.losses import coefficient_prior, landmark_loss, photometric_loss
from facenet3d.params import FaceParams
from facenet3d.refine.config import PhotometricStageConfig
from facenet3d.refine.optim import minimise
from facenet3d.refine.target import FitTarget
from facenet3d.refine.visible_part import VisiblePart
from facenet3d.render import Renderer, RenderOutput
from facenet3d.render.color import linear_to_srgb, srgb_to_linear
from facenet3d.render.pose import apply_pose, rotation_6d_to_matrix
from facenet3d.render.rasterize import Fragments
from facenet3d.render.shading import IRRADIANCE_FACTORS, sh_basis

#: Rec. 601 luma weights of sRGB-encoded values: what PIL's ``convert("L")`` and most tools use
#: to make a greyscale photo.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: A face crop is greyscale when at most :data:`GREY_OUTLIER_FRACTION` of its pixels have channels
#: more than :data:`GREY_TOLERANCE` apart (a grey JPEG saved as RGB keeps a level or two of chroma
#: noise; colour photos, even pale ones, have 90 %+ of their pixels beyond it).
GREY_TOLERANCE = 3.0 / 255.0
GREY_OUTLIER_FRACTION = 0.02


def greyscale_faces(image: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: which crops ``(B, S, S, 3)`` (values in ``[0, 1]``) are greyscale."""
    spread = image.amax(-1) - image.amin(-1)
    return (spread > GREY_TOLERANCE).float().flatten(1).mean(1) <= GREY_OUTLIER_FRACTION


def to_luma(image: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded ``(..., 3)`` -> its Rec. 601 luma in all three channels, ``(..., 3)``."""
    luma = (image * image.new_tensor(LUMA_WEIGHTS)).sum(-1, keepdim=True)
    return luma.expand_as(image)


def grey_albedo(albedo: torch.Tensor) -> torch.Tensor:
    """Linear albedo ``(..., 3)`` with its chroma removed: the grey of the same luma, ``(..., 3)``."""
    return srgb_to_linear(to_luma(linear_to_srgb(albedo)))


def colourless_light(sh: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
    """SH light ``(B, 9, 3)`` with the channels of the faces flagged in ``grey (B,)`` tied to their mean."""
    if not bool(grey.any()):
        return sh
    return torch.where(grey[:, None, None], sh.mean(-1, keepdim=True).expand_as(sh), sh)


@dataclass
class ScaledTarget:
    """A :class:`FitTarget` resized to a render resolution."""

    image: torch.Tensor  # (B, R, R, 3)
    skin: torch.Tensor  # (B, R, R)
    landmarks68: torch.Tensor  # (B, 68, 2)
    dense: torch.Tensor  # (B, 468, 2)
    size: int

    @classmethod
    def from_target(cls, target: FitTarget, size: int) -> ScaledTarget:
        s = size / target.size
        img = target.image.permute(0, 3, 1, 2)
        img = F.interpolate(img, size=(size, size), mode="area") if size < target.size else \
            F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        skin = F.interpolate(target.skin_mask[:, None], size=(size, size), mode="area")[:, 0]
        return cls(img.permute(0, 2, 3, 1), skin, target.landmarks68 * s, target.landmarks478[:, :468, :2] * s, size)


def render_params(model: MorphableModel, renderer: Renderer, params: FaceParams, size: int,
                  albedo_map: torch.Tensor | None = None, specular_map: torch.Tensor | None = None,
                  roughness_map: torch.Tensor | None = None, vertex_offsets: torch.Tensor | None = None,
                  map_size: int | None = None, part: VisiblePart | None = None,
                  visible: Fragments | None = None) -> RenderOutput:
    """Render faces into their ``size`` crop (linear RGB).

    Args:
        model: the face model.
        renderer: a renderer for the model's topology (for ``part``'s, when given).
        params: the faces.
        size: crop size in pixels.
        albedo_map, specular_map, roughness_map: per-face maps overriding the model's
            statistical ones (stage C).
        vertex_offsets: ``(B, V, 3)`` mm added to the model-frame vertices (displacement; ``V``
            the part's vertices when a part is given).
        map_size: texels across the model's own UV maps when they are rendered (default: their
            size; see :meth:`~facenet3d.facemodel.MorphableModel.albedo`).
        part: render only this part of the mesh (:class:`VisiblePart`); None: the whole mesh.
        visible: the pixels' triangles from an earlier render of the same mesh (see
            :class:`~facenet3d.render.Renderer`), kept instead of searched again; None: search.
    """
    camera = crop_camera(size, device=params.identity.device)
    verts = model.decode(identity=params.identity, expression=params.expression) if part is None \
        else part.decode(model, params)
    if vertex_offsets is not None:
        verts = verts + vertex_offsets
    cam_verts = apply_pose(verts, rotation_6d_to_matrix(params.rotation), params.translation)
    albedo = albedo_map if albedo_map is not None else model.albedo(params.albedo, size=map_size)
    if albedo.ndim == 3 and part is not None:  # per-vertex albedo
        albedo = albedo[:, part.vertices]
    specular = specular_map
    if specular is None and model.specular_mean is not None:
        mean = mean_specular(model, map_size if model.albedo_space == "uv" else None)
        specular = mean * (params.specular[:, :, None, None] if mean.ndim == 4 else params.specular[:, :, None])
        if specular.ndim == 3 and part is not None:
            specular = specular[:, part.vertices]
    roughness = roughness_map if roughness_map is not None else params.roughness
    return renderer(cam_verts, camera, params.sh, albedo.clamp(0.0, 1.0), specular, roughness, visible=visible)


def mean_specular(model: MorphableModel, size: int | None = None) -> torch.Tensor:
    """The model's mean specular albedo (``(1, T, T, C)`` map at ``size`` texels or ``(1, V, C)``), with
    one channel (``C = 1``) when it is grey, as face models' is: the renderer broadcasts a grey
    specular albedo over the light's colours, so the fit builds, samples and differentiates a
    third of the values."""
    spec = model.specular(size=size)
    # Kept on the model, for its buffer as it is (the buffer keeps the address from being reused).
    buffer = model.specular_mean
    key = ("grey_specular", buffer.data_ptr(), buffer._version)
    cache = model.__dict__.setdefault("_fit_cache", {})
    if key not in cache:
        cache[key] = bool(torch.equal(buffer[..., 1:], buffer[..., :1].expand_as(buffer[..., 1:])))
    return spec[..., :1] if cache[key] else spec


def landmark_terms(model: MorphableModel, params: FaceParams, target: ScaledTarget) -> torch.Tensor:
    """Dense + 68 landmark loss of ``params`` against a scaled target, ``(B,)``."""
    dec = decode_face(model, params, crop_camera(target.size, device=params.identity.device), landmarks_only=True)
    norm = 0.5 * target.size
    loss = landmark_loss(dec.landmarks68, target.landmarks68, normaliser=norm)
    if dec.landmarks_dense is not None:
        loss = loss + landmark_loss(dec.landmarks_dense, target.dense[:, : dec.landmarks_dense.shape[1]],
                                    normaliser=norm)
    return loss


def photometric_error(out: RenderOutput, target: ScaledTarget, robust_scale: float, grey: torch.Tensor | None = None,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Robust sRGB colour error on the skin pixels the render covers, ``(B,)``.

    Args:
        out: the render.
        target: the photo.
        robust_scale: colour distance where the robust loss starts to saturate.
        grey: ``(B,)`` bool, faces compared in luma only (greyscale photos); None: none.
        weights: ``(B, R, R)`` per-pixel weights in ``[0, 1]`` (outlier rejection); None: 1.
    """
    mask = target.skin * out.mask[..., 0].detach()
    if weights is not None:
        mask = mask * weights
    rendered = linear_to_srgb(out.image)
    if grey is not None and bool(grey.any()):
        rendered = torch.where(grey[:, None, None, None], to_luma(rendered), rendered)
    return photometric_loss(rendered, target.image, mask, scale=robust_scale)


def fit_photometric(model: MorphableModel, target: FitTarget, config: PhotometricStageConfig,
                    start: FaceParams, renderer: Renderer | None = None, progress=None,
                    fixed: Collection[str] = ()) -> FaceParams:
    """Run stage B from ``start`` (stage A's result or the regressor's); the parameters named in
    ``fixed`` (e.g. ``("identity",)``) keep their start values. The part of the mesh the crop shows
    is rendered (:class:`VisiblePart`), with ``renderer``'s shading mode when one is given."""
    if model.albedo_space == "none":
        raise ValueError("photometric refinement needs a face model with an albedo space")
    scaled = ScaledTarget.from_target(target, config.resolution)
    part = VisiblePart.of(model, start, scaled.size)
    renderer = part.renderer(model, renderer.shading if renderer is not None else "vertex")
    grey = greyscale_faces(target.image)
    if "sh" not in fixed:
        start = solve_lighting(model, renderer, part, start, scaled, config.map_size or None)
    names = ("identity", "expression", "albedo", "rotation", "translation", "sh", "specular", "roughness")
    # Translation in decimetres and SH in units of the ambient term keep step sizes comparable.
    scales = {"translation": 100.0, "sh": 3.5449}
    leaves = {n: (getattr(start, n) / scales.get(n, 1.0)).clone().requires_grad_(True) for n in names}
    def current() -> FaceParams:
        p = {n: leaves[n] * scales.get(n, 1.0) for n in names}
        p["specular"] = p["specular"].clamp(0.0, 4.0)
        p["roughness"] = p["roughness"].clamp(0.1, 1.0)
        p["sh"] = colourless_light(p["sh"], grey)
        return FaceParams(**p)

    def loss_fn() -> torch.Tensor:
        params = current()
        out = render_params(model, renderer, params, scaled.size, map_size=config.map_size or None, part=part)
        loss = config.photometric_weight * photometric_error(out, scaled, config.robust_scale, grey)
        loss = loss + config.landmark_weight * landmark_terms(model, params, scaled)
        return loss + config.identity_prior * coefficient_prior(params.identity) \
            + config.expression_prior * coefficient_prior(params.expression) \
            + config.albedo_prior * coefficient_prior(params.albedo)

    model.clamp_expression_(leaves["expression"].data)
    minimise([t for n, t in leaves.items() if n not in fixed], loss_fn, config.iterations, config.lr, progress,
             project=lambda: model.clamp_expression_(leaves["expression"]))
    return current().detach()


@torch.no_grad()
def solve_lighting(model: MorphableModel, renderer: Renderer, part: VisiblePart | None, params: FaceParams,
                   target: ScaledTarget, map_size: int | None = None, ridge: float = 0.05) -> FaceParams:
    """``params`` with the SH light that best explains the photo's skin given their geometry and albedo.

    The diffuse radiance is linear in the SH coefficients (``albedo * sum_k A_k Y_k(n) c_k``), so
    the light is a ridge-regularised least-squares fit per channel on the skin pixels the render
    covers, in linear RGB, with the current light as the prior: a warm start that leaves the
    optimisation to refine geometry and albedo rather than to find the light step by step.

    Args:
        model: the face model.
        renderer: a renderer of ``part`` (of the whole model when ``part`` is None).
        part: the rendered part of the mesh, or None.
        params: the faces; their light is the prior.
        target: the photos at the render size.
        map_size: the size the model's UV maps are rendered at (see :func:`render_params`).
        ridge: weight of the prior, relative to the mean diagonal of the normal equations.
    """
    out = render_params(model, renderer, params, target.size, map_size=map_size, part=part)
    mask = (target.skin > 0.5) & (out.mask[..., 0] > 0.5)
    basis = sh_basis(out.normals) * out.normals.new_tensor(IRRADIANCE_FACTORS)  # (B, R, R, 9)
    photo = srgb_to_linear(target.image)
    sh = params.sh.clone()
    for i in range(sh.shape[0]):
        if int(mask[i].sum()) < 50:
            continue
        y, albedo, value = basis[i][mask[i]], out.albedo[i][mask[i]], photo[i][mask[i]]  # (N, 9), (N, 3), (N, 3)
        for c in range(3):
            a = y * albedo[:, c:c + 1]
            normal = a.t() @ a
            lam = ridge * normal.diagonal().mean().clamp_min(1e-12)
            rhs = a.t() @ value[:, c] + lam * sh[i, :, c]
            sh[i, :, c] = torch.linalg.solve(normal + lam * torch.eye(9, dtype=a.dtype, device=a.device), rhs)
    out_params = params.clone()
    out_params.sh = sh
    return out_params


def initial_lighting(model: MorphableModel, target: FitTarget, params: FaceParams) -> FaceParams:
    """Set a uniform light whose level makes the mean albedo match the photo's skin brightness."""
    skin = target.skin_mask[..., None]
    photo = (target.image * skin).sum((1, 2)) / skin.sum((1, 2)).clamp_min(1.0)  # (B, 3) sRGB
    mean_albedo = model.albedo().reshape(-1, 3).mean(0)
    level = (srgb_to_linear(photo).mean(1) / mean_albedo.mean().clamp_min(1e-3)).clamp(0.2, 3.0)
    out = params.clone()
    out.sh = torch.zeros_like(out.sh)
    out.sh[:, 0] = level[:, None] * 3.5449
    return out
