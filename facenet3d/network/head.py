"""The parameter head: pooled features -> one flat :class:`~facenet3d.params.FaceParams` vector.

``output = offset + scale * (W f + b)`` with ``W = 0``, ``b = 0`` at initialisation, so an
untrained regressor predicts exactly ``offset``: the neutral parameters of
:func:`neutral_params` (the mean face, looking into the camera, placed where the aligned crops
put a face, under uniform white light).

Why a per-output ``scale`` (:func:`output_scales`): with Adam every weight moves by about the
learning rate per step whatever its gradient's size, so the change of output ``k`` per step is
proportional to ``scale_k``. Choosing ``scale_k`` as the typical spread of parameter ``k``
(one prior standard deviation of a coefficient, a few degrees of rotation, ten millimetres
of translation) makes every field cross its range in a similar number of steps, instead of
translations in millimetres crawling while coefficients of unit variance overshoot.
"""

from __future__ import annotations

import torch
from torch import nn

from facenet3d.decode import crop_camera
from facenet3d.facemodel import MorphableModel
from facenet3d.params import FaceParams

#: Rotation: spread of the 6D entries (the first two columns of R); 0.3 is about 17 degrees.
ROTATION_SCALE = 0.3
#: Translation spread, mm: sideways (x, y) and in depth (z). Aligned crops centre and scale the
#: face, so the spread is small.
TRANSLATION_SCALE_MM = (10.0, 10.0, 50.0)
#: Spherical-harmonics spread as a fraction of the coefficient of a uniform light of shading 1.
SH_RELATIVE_SCALE = 0.3
SPECULAR_SCALE = 0.5
ROUGHNESS_SCALE = 0.1
#: Roughness of a model without a roughness prior (mid-range of the fits of Weyrich et al. 2006).
DEFAULT_ROUGHNESS = 0.4


class ParamHead(nn.Module):
    """Linear head with a fixed per-output offset and scale (see the module docstring).

    Args:
        in_features: width of the pooled features.
        out_features: length ``D`` of the parameter vector.

    The ``offset`` and ``scale`` buffers start as zeros and ones; :meth:`initialise` sets them.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.register_buffer("offset", torch.zeros(out_features))
        self.register_buffer("scale", torch.ones(out_features))
        self.zero_weights()

    def zero_weights(self) -> None:
        """Zero the linear layer, so the head outputs ``offset`` for any input."""
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def initialise(self, offset: torch.Tensor, scale: torch.Tensor) -> None:
        """Set ``(D,)`` offset and scale and zero the weights."""
        self.offset.copy_(offset.reshape(-1))
        self.scale.copy_(scale.reshape(-1))
        self.zero_weights()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(B, D)`` parameter vector."""
        return torch.addcmul(self.offset, self.scale, self.linear(features))


def neutral_translation(model: MorphableModel, crop_size: int) -> torch.Tensor:
    """``(3,)`` mm: where the aligned crops put the mean face when it looks into the camera.

    The model's iBUG-68 landmark vertices (mean shape, no rotation) are fitted to the canonical
    template of :mod:`facenet3d.landmarks.align` under :func:`~facenet3d.decode.crop_camera`. The
    perspective projection ``u - cx = f (X + tx) / -(Z + tz)`` is linear in ``t`` after
    multiplying by the depth, so one least-squares solve gives it (an algebraic error, exact when
    the fit is exact; here it lands about 0.9 m away, close to
    :func:`~facenet3d.decode.default_distance_mm`). It does not depend on ``crop_size``: focal
    length and template both scale with it.
    """
    from facenet3d.landmarks.align import canonical_template

    camera = crop_camera(crop_size)
    f = camera.focal[0, 0].double()
    c = camera.principal[0].double()
    valid = model.landmarks68 >= 0
    pts = model.mean_shape[model.landmarks68[valid]].detach().cpu().double()  # (L, 3)
    uv = torch.as_tensor(canonical_template(crop_size), dtype=torch.float64)[valid.cpu()]
    du, dv = uv[:, 0] - c[0], uv[:, 1] - c[1]
    zero = torch.zeros_like(du)
    # Unknowns (tx, ty, tz): rows for u then v.
    a = torch.cat([torch.stack([-f.expand_as(du), zero, -du], 1),
                   torch.stack([zero, f.expand_as(dv), -dv], 1)])
    b = torch.cat([f * pts[:, 0] + du * pts[:, 2], -f * pts[:, 1] + dv * pts[:, 2]])
    t = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    return t.float()


def neutral_params(model: MorphableModel, crop_size: int, ambient_shading: float = 1.0) -> FaceParams:
    """The untrained regressor's output for one face.

    Mean identity, expression and albedo; frontal; at :func:`neutral_translation`; a uniform
    white environment whose Lambertian shading is ``ambient_shading`` (1: rendered colour =
    albedo); the model's specular prior (scale 1) and its mean roughness.
    """
    roughness = DEFAULT_ROUGHNESS if model.roughness_mean is None else float(model.roughness_mean.mean())
    params = FaceParams.neutral(1, model.identity_dim, model.expression_dim, model.albedo_dim,
                                ambient=ambient_shading, roughness=roughness)
    params.translation = neutral_translation(model, crop_size)[None]
    return params


def output_scales(model: MorphableModel, neutral: FaceParams) -> FaceParams:
    """Per-output scales (see the module docstring), in the layout of ``neutral`` (one face)."""
    from facenet3d.render.shading import sh_uniform

    full = torch.full_like
    return FaceParams(
        identity=model.identity_std.detach().cpu()[None].clone(),
        expression=model.expression_std.detach().cpu()[None].clone(),
        albedo=(model.albedo_std.detach().cpu()[None].clone() if model.albedo_dim
                else neutral.albedo.new_ones(1, 0)),
        rotation=full(neutral.rotation, ROTATION_SCALE),
        translation=torch.tensor([TRANSLATION_SCALE_MM]),
        sh=full(neutral.sh, SH_RELATIVE_SCALE * float(sh_uniform(1.0)[0, 0, 0])),
        specular=full(neutral.specular, SPECULAR_SCALE),
        roughness=full(neutral.roughness, ROUGHNESS_SCALE),
    )
