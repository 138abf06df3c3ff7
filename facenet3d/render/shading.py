"""Shading: second-order spherical-harmonics lighting on Lambertian albedo, plus a specular lobe.

**Spherical harmonics.** Lighting is a distant environment whose radiance ``L(w)`` is expanded in
the 9 real SH of bands 0-2, ``L(w) = sum_k c_k Y_k(w)``, one coefficient per colour channel:
``sh`` is ``(B, 9, 3)``. The basis order and constants are those of Ramamoorthi and Hanrahan,
"An efficient representation for irradiance environment maps" (SIGGRAPH 2001), also used by
Deep3DFaceRecon: for a unit direction ``(x, y, z)``

====  ==============================  =========================
 k     Y_k                             irradiance factor A_l / pi
====  ==============================  =========================
 0     0.282095                        1
 1     0.488603 y                      2/3
 2     0.488603 z                      2/3
 3     0.488603 x                      2/3
 4     1.092548 x y                    1/4
 5     1.092548 y z                    1/4
 6     0.315392 (3 z^2 - 1)            1/4
 7     1.092548 x z                    1/4
 8     0.546274 (x^2 - y^2)            1/4
====  ==============================  =========================

The Lambertian radiance of albedo ``rho`` with normal ``n`` is ``rho E(n) / pi``, where the
irradiance ``E(n) = sum_k A_l c_k Y_k(n)`` (``A_0 = pi``, ``A_1 = 2 pi / 3``, ``A_2 = pi / 4``). So
:func:`sh_shading` returns ``E(n) / pi``: a uniform white environment of radiance 1 (``c_0 =
sqrt(4 pi) = 3.5449``, see :func:`sh_uniform`) gives shading 1 and colour = albedo. Relative to
Deep3DFaceRecon's ``gamma``, whose basis already includes ``A_l`` (``a_0 c_0 = pi Y_0`` ...),
``sh = pi * gamma`` (their normals and axes may differ in sign: convert through directions, e.g.
:func:`sh_directional`, rather than coefficient by coefficient). Shading is not clamped: like
every SH lighting model it can dip below zero where the 9-term fit of a harsh light rings.

**Specular.** A normalised Blinn-Phong lobe lit by the SH's *dominant directional light*
(:func:`dominant_light`: the direction and intensity of the distant light that explains the band-1
coefficients; ambient-only lighting casts no highlight). With intensity ``I`` in the same units as
the diffuse term (a light ``I`` from ``l`` makes a white Lambertian surface facing it shade ``I``),
``specular = k_s I (s + 8) / 8 (n . h)^s (n . l)``, ``h = normalise(l + v)``: this is ``pi`` times the
energy-normalised Blinn-Phong BRDF ``(s + 8) / (8 pi) (n . h)^s``, so diffuse and specular share one
light unit. The exponent comes from a roughness ``r`` in ``[0, 1]`` (perceptual, as in Disney/Unreal
PBR): ``alpha = r^2`` and ``s = 2 / alpha^2 - 2`` (the Beckmann-equivalent Phong exponent of Walter
et al. 2007); ``r`` is clamped to ``[0.08, 1]``. One power per pixel: cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facenet3d.errors import RenderError

_C0, _C1 = 0.5 * math.sqrt(1 / math.pi), math.sqrt(3 / (4 * math.pi))
_C2, _C20, _C22 = 0.5 * math.sqrt(15 / math.pi), 0.25 * math.sqrt(5 / math.pi), 0.25 * math.sqrt(15 / math.pi)
SH_CONSTANTS = (_C0, _C1, _C1, _C1, _C2, _C2, _C20, _C2, _C22)
"""The constant factor of each real SH basis function ``Y_k`` (see the module docstring)."""

IRRADIANCE_FACTORS = (1.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 0.25, 0.25, 0.25, 0.25, 0.25)
"""``A_l / pi`` per coefficient: the Lambertian convolution of band ``l`` over ``pi``."""

MIN_ROUGHNESS = 0.08

_Y1 = SH_CONSTANTS[1]


def _sh_polynomials(directions: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The polynomial parts of the basis, ``1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2``, along ``dim``
    (where ``directions`` has its 3 components): ``(..., 3) -> (..., 9)`` by default."""
    x, y, z = directions.unbind(dim)
    return torch.stack([torch.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], dim)


def sh_basis(directions: torch.Tensor) -> torch.Tensor:
    """The 9 real SH basis functions at unit directions.

    Args:
        directions: ``(..., 3)`` unit vectors ``(x, y, z)``.

    Returns:
        ``(..., 9)`` ``Y_k`` in the order of the module docstring.
    """
    return _sh_polynomials(directions) * directions.new_tensor(SH_CONSTANTS)


def _check_sh(sh: torch.Tensor) -> None:
    if sh.ndim != 3 or sh.shape[1:] != (9, 3):
        raise RenderError(f"sh must be (B, 9, 3) coefficients, got {tuple(sh.shape)}")


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian SH shading ``E(n) / pi`` (colour = albedo * shading).

    Args:
        normals: ``(B, ..., 3)`` unit normals in the frame the lighting is expressed in (the
            camera frame for :class:`~facenet3d.render.Renderer`).
        sh: ``(B, 9, 3)`` SH radiance coefficients per colour channel.

    Returns:
        ``(B, ..., 3)`` shading per colour channel.
    """
    _check_sh(sh)
    b = normals.shape[0]
    # Basis constants and the Lambertian factors folded into the 27 weights, not the pixels.
    scale = sh.new_tensor(IRRADIANCE_FACTORS) * sh.new_tensor(SH_CONSTANTS)
    weights = (sh * scale[:, None]).expand(b, -1, -1)
    # Components as rows, (B, 3, N): the product is then (3, 9) @ (9, N), several times faster on
    # CPU than the tall-skinny (N, 9) @ (9, 3), and every polynomial is a contiguous row.
    # (stack of the unbound components rather than a transposed copy: its backward hands the
    # normals a contiguous gradient, which the vertex-normal backward pass needs to be fast.)
    rows = torch.stack(normals.reshape(b, -1, 3).unbind(-1), 1)
    shading = torch.bmm(weights.transpose(1, 2), _sh_polynomials(rows, 1))  # (B, 3, N)
    return shading.transpose(1, 2).view(*normals.shape[:-1], 3)


def sh_uniform(intensity: float | torch.Tensor, batch: int = 1) -> torch.Tensor:
    """``(B, 9, 3)`` coefficients of a uniform environment whose shading is ``intensity`` (per channel)."""
    rgb = torch.as_tensor(intensity, dtype=torch.get_default_dtype()).expand(3)
    sh = torch.zeros(batch, 9, 3, dtype=rgb.dtype)
    sh[:, 0] = rgb * (4.0 * math.pi * SH_CONSTANTS[0])  # the integral of Y_0 over the sphere
    return sh


def sh_directional(direction: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """SH coefficients of a distant directional light.

    Args:
        direction: ``(B, 3)`` direction *towards* the light (normalised here).
        intensity: ``(B, 3)`` or ``(B, 1)``: the shading of a surface facing the light.

    Returns:
        ``(B, 9, 3)``: ``pi I Y_k(d)``, whose Lambertian shading approximates ``I max(n . d, 0)``
        (exactly, up to the 9-term truncation: at ``n = d`` it gives ``1.0625 I``).
    """
    d = F.normalize(direction, dim=-1)
    return math.pi * sh_basis(d)[:, :, None] * intensity[:, None, :]


def dominant_light(sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The directional light that explains the band-1 SH coefficients.

    Args:
        sh: ``(B, 9, 3)``.

    Returns:
        ``direction`` ``(B, 3)`` unit vector towards the light (zero when band 1 vanishes) and
        ``intensity`` ``(B, 3)`` in the units of :func:`sh_directional` (``>= 0``).
    """
    _check_sh(sh)
    # Band 1 of a light I from d is pi I 0.488603 (d_y, d_z, d_x); reorder to (x, y, z).
    band1 = sh[:, (3, 1, 2), :] / (math.pi * _Y1)  # (B, 3 xyz, 3 rgb): I_c d per channel
    direction = F.normalize(band1.mean(-1), dim=-1, eps=1e-12)
    intensity = (band1 * direction[..., None]).sum(1).clamp_min(0.0)
    return direction, intensity


def blinn_phong(normals: torch.Tensor, view: torch.Tensor, light_direction: torch.Tensor,
                light_intensity: torch.Tensor, roughness: torch.Tensor) -> torch.Tensor:
    """Normalised Blinn-Phong specular shading (multiply by the specular albedo for colour).

    Args:
        normals: ``(B, ..., 3)`` unit normals.
        view: ``(B, ..., 3)`` unit directions from the surface towards the camera.
        light_direction: ``(B, 3)`` unit direction towards the light.
        light_intensity: ``(B, 3)`` per channel.
        roughness: ``(B, ..., 1)`` or broadcastable, in ``[0, 1]`` (clamped to ``[0.08, 1]``).

    Returns:
        ``(B, ..., 3)`` ``I (s + 8) / 8 (n . h)^s (n . l)``, see the module docstring.
    """
    expand = (-1,) + (1,) * (normals.ndim - 2) + (3,)  # (B or 1, 1, ..., 3): broadcasts over pixels
    light = light_direction.reshape(expand)
    half = F.normalize(light + view, dim=-1, eps=1e-12)
    n_dot_h = (normals * half).sum(-1, keepdim=True).clamp_min(1e-6)
    n_dot_l = (normals * light).sum(-1, keepdim=True).clamp_min(0.0)
    alpha = roughness.clamp(MIN_ROUGHNESS, 1.0) ** 2
    exponent = 2.0 / (alpha * alpha) - 2.0
    lobe = (exponent + 8.0) / 8.0 * n_dot_h.pow(exponent) * n_dot_l
    return lobe * light_intensity.reshape(expand)


def shading_terms(normals: torch.Tensor, view: torch.Tensor | None, sh: torch.Tensor,
                  roughness: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Diffuse and specular shading, to be multiplied by the diffuse and specular albedos.

    Args:
        normals: ``(B, ..., 3)`` unit normals (camera frame).
        view: ``(B, ..., 3)`` unit directions towards the camera; only needed with ``roughness``.
        sh: ``(B, 9, 3)`` lighting.
        roughness: ``(B, ..., 1)`` (or broadcastable) or None for no specular term.

    Returns:
        ``(diffuse, specular)``, each ``(B, ..., 3)``; ``specular`` is None without roughness.
    """
    diffuse = sh_shading(normals, sh)
    if roughness is None:
        return diffuse, None
    if view is None:
        raise RenderError("a specular term needs view directions")
    direction, intensity = dominant_light(sh)
    return diffuse, blinn_phong(normals, view, direction, intensity, roughness)
