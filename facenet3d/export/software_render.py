"""Rendering without torch, for overlays: a numpy z-buffer rasteriser and SH shading at the vertices.

The torch path renders its overlays with :class:`facenet3d.render.Renderer` (per-vertex SH
shading, no antialiasing) in the aligned crop's camera; the torch-free runtime renders the same
image with numpy here (compositing is :mod:`facenet3d.export.overlay`'s):

- :func:`rasterize`: the visible triangle and perspective-correct barycentrics at every pixel
  centre (pixel centres at ``+0.5``; triangles sorted into classes by the power-of-two size of
  their pixel bounding box and tested against a stencil of that size, as the torch rasteriser
  does; a pixel covered twice keeps the nearer triangle);
- :func:`sh_shading`: the numpy twin of :func:`facenet3d.render.shading.sh_shading` (all nine
  SH coefficients, Lambertian, ``E(n) / pi``), evaluated at the vertices (Gouraud);
- :func:`render_face`: colour = vertex albedo x shading, interpolated, sRGB-encoded, with coverage.

The colour differs from the torch path's only where the torch path samples the UV albedo map
per pixel and this one interpolates the albedo baked at the vertices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facenet3d.export.mesh import vertex_normals
from facenet3d.export.textures import linear_to_srgb

# A pixel centre on a shared edge must not fall in a crack between its two triangles because of
# rounding (the torch rasteriser's tolerance).
_INSIDE_EPS = 1e-5
# Largest number of (triangle, pixel) candidates tested at once, to bound memory.
_MAX_CANDIDATES = 1 << 21

_C0, _C1 = 0.5 * math.sqrt(1 / math.pi), math.sqrt(3 / (4 * math.pi))
_C2, _C20, _C22 = 0.5 * math.sqrt(15 / math.pi), 0.25 * math.sqrt(5 / math.pi), 0.25 * math.sqrt(15 / math.pi)
#: Constant factor of each real SH basis function (order of :mod:`facenet3d.render.shading`).
SH_CONSTANTS = np.array([_C0, _C1, _C1, _C1, _C2, _C2, _C20, _C2, _C22])
#: ``A_l / pi`` per coefficient: the Lambertian convolution of band ``l`` over ``pi``.
IRRADIANCE_FACTORS = np.array([1.0, 2 / 3, 2 / 3, 2 / 3, 0.25, 0.25, 0.25, 0.25, 0.25])


@dataclass
class Raster:
    """Which triangle is visible at each pixel.

    Attributes:
        triangle: ``(H, W)`` int64 triangle index, -1 on the background.
        bary: ``(H, W, 3)`` float32 perspective-correct barycentrics (0 on the background).
    """

    triangle: np.ndarray
    bary: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool coverage."""
        return self.triangle >= 0


def rasterize(xy: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size: tuple[int, int]) -> Raster:
    """Rasterise triangles given in pixel coordinates.

    Args:
        xy: ``(N, 2)`` vertex positions in pixels (origin top-left, pixel centres at ``+0.5``).
        depth: ``(N,)`` distance along the viewing axis (``-z``, > 0); for perspective-correct
            barycentrics and the depth test. Triangles with a vertex at ``depth <= 0`` are dropped.
        triangles: ``(F, 3)`` int vertex indices (either winding: no culling).
        size: ``(H, W)``.

    Returns:
        The :class:`Raster`.
    """
    h, w = int(size[0]), int(size[1])
    xy = np.asarray(xy, np.float64)
    inv_w = 1.0 / np.where(np.asarray(depth, np.float64) > 0, depth, np.nan)
    tri = np.asarray(triangles, np.int64)
    p = xy[tri]  # (F, 3, 2)
    planes = _barycentric_planes(p)  # (F, 2, 3): l_i = a + b x + c y for i = 0, 1
    lo = np.maximum(np.ceil(p.min(1) - 0.5), 0)
    hi = np.minimum(np.floor(p.max(1) - 0.5), [w - 1, h - 1])
    ok = (np.isfinite(inv_w[tri]).all(1) & np.isfinite(planes).all((1, 2))
          & (hi[:, 0] >= lo[:, 0]) & (hi[:, 1] >= lo[:, 1]))
    ids = np.nonzero(ok)[0]
    # Stencil classes: the bounding box's width and height rounded up to powers of two.
    ext = np.ceil(np.log2(hi[ids] - lo[ids] + 1)).astype(np.int64)
    classes = ext[:, 0] * 64 + ext[:, 1]

    # The depth test keeps, per pixel, the smallest int64 code: 1/w quantised (nearest first) above
    # the triangle index (ties go to the lower index), with one np.minimum.at per chunk.
    tri_bits = max(1, int(len(tri)).bit_length())
    depth_levels = (1 << min(40, 62 - tri_bits)) - 1
    used = inv_w[tri[ids]] if len(ids) else np.zeros((0, 3))
    near, far = (float(used.max()), float(used.min())) if used.size else (1.0, 0.0)
    depth_scale = depth_levels / (near - far) if near > far else 0.0
    no_hit = np.iinfo(np.int64).max
    best = np.full(h * w, no_hit, np.int64)
    for c in np.unique(classes):
        members = ids[classes == c]
        sx, sy = 1 << int(c // 64), 1 << int(c % 64)
        oy, ox = np.divmod(np.arange(sx * sy, dtype=np.float64), sx)
        step = max(1, _MAX_CANDIDATES // (sx * sy))
        for start in range(0, len(members), step):
            t = members[start:start + step]
            x0, y0 = lo[t, 0] + 0.5, lo[t, 1] + 0.5  # first pixel centre of each box
            a, b, cy = planes[t, :, 0], planes[t, :, 1], planes[t, :, 2]
            base = a + b * x0[:, None] + cy * y0[:, None]  # (T, 2) at the first centre
            l0 = base[:, :1] + b[:, :1] * ox + cy[:, :1] * oy  # (T, K)
            l1 = base[:, 1:] + b[:, 1:] * ox + cy[:, 1:] * oy
            inside = ((ox <= hi[t, 0, None] - lo[t, 0, None]) & (oy <= hi[t, 1, None] - lo[t, 1, None])
                      & (l0 >= -_INSIDE_EPS) & (l1 >= -_INSIDE_EPS) & (l0 + l1 <= 1 + _INSIDE_EPS))
            tt, kk = np.nonzero(inside)
            if not len(tt):
                continue
            k0, k1 = l0[tt, kk], l1[tt, kk]
            iw = inv_w[tri[t[tt]]]
            inv = iw[:, 2] + k0 * (iw[:, 0] - iw[:, 2]) + k1 * (iw[:, 1] - iw[:, 2])  # 1/w: affine on screen
            q = np.clip((near - inv) * depth_scale, 0, depth_levels).astype(np.int64)
            pix = (lo[t[tt], 1] + oy[kk]).astype(np.int64) * w + (lo[t[tt], 0] + ox[kk]).astype(np.int64)
            np.minimum.at(best, pix, (q << tri_bits) | t[tt])
    best_tri = np.where(best == no_hit, -1, best & ((1 << tri_bits) - 1))
    bary = np.zeros((h * w, 3), np.float32)
    covered = np.nonzero(best_tri >= 0)[0]
    if len(covered):
        t = best_tri[covered]
        x, y = covered % w + 0.5, covered // w + 0.5
        l01 = planes[t, :, 0] + planes[t, :, 1] * x[:, None] + planes[t, :, 2] * y[:, None]
        lam = np.clip(np.concatenate([l01, 1.0 - l01.sum(1, keepdims=True)], 1), 0.0, None)
        persp = lam * inv_w[tri[t]]  # perspective-correct: b_i ~ l_i / w_i
        bary[covered] = persp / persp.sum(-1, keepdims=True)
    return Raster(triangle=best_tri.reshape(h, w), bary=bary.reshape(h, w, 3))


def _barycentric_planes(p: np.ndarray) -> np.ndarray:
    """``(F, 2, 3)``: screen-space barycentrics ``l_0, l_1`` of triangles ``p (F, 3, 2)`` as planes
    ``l_i(x, y) = a + b x + c y`` (``l_2 = 1 - l_0 - l_1``); NaN for degenerate triangles."""
    (x0, y0), (x1, y1), (x2, y2) = (p[:, i].T for i in range(3))
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(area != 0, 1.0 / area, np.nan)
    # l_0: twice the signed area of (point, p1, p2) over that of (p0, p1, p2); l_1 likewise with (p2, p0).
    l0 = np.stack([x1 * y2 - x2 * y1, y1 - y2, x2 - x1], -1)
    l1 = np.stack([x2 * y0 - x0 * y2, y2 - y0, x0 - x2], -1)
    return np.stack([l0, l1], 1) * inv[:, None, None]


def interpolate(raster: Raster, triangles: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-vertex ``values (N, C)`` at every pixel: ``(H, W, C)`` float32, 0 on the background."""
    h, w = raster.triangle.shape
    values = np.asarray(values, np.float32)
    out = np.zeros((h, w, values.shape[-1]), np.float32)
    mask = raster.mask
    corners = values[np.asarray(triangles)[raster.triangle[mask]]]  # (P, 3, C)
    out[mask] = np.einsum("pk,pkc->pc", raster.bary[mask], corners)
    return out


def sh_shading(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Lambertian SH shading ``E(n) / pi`` (numpy twin of :func:`facenet3d.render.shading.sh_shading`).

    Args:
        normals: ``(N, 3)`` unit normals in the lighting's frame (the camera frame).
        sh: ``(9, 3)`` SH radiance coefficients per colour channel.

    Returns:
        ``(N, 3)`` shading per channel (not clamped).
    """
    x, y, z = np.asarray(normals, np.float64).T
    poly = np.stack([np.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], -1)
    weights = np.asarray(sh, np.float64) * (SH_CONSTANTS * IRRADIANCE_FACTORS)[:, None]
    return poly @ weights


def render_face(vertices: np.ndarray, triangles: np.ndarray, vertex_albedo: np.ndarray, sh: np.ndarray,
                focal: tuple[float, float], principal: tuple[float, float], size: tuple[int, int],
                geometry_sh: np.ndarray | None = None, geometry_albedo: float = 1.0
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render a face mesh with per-vertex albedo and SH lighting.

    Args:
        vertices: ``(V, 3)`` mm in the camera frame.
        triangles: ``(F, 3)``.
        vertex_albedo: ``(V, 3)`` linear RGB.
        sh: ``(9, 3)`` lighting in the camera frame.
        focal, principal: the camera in pixels.
        size: ``(H, W)``.
        geometry_sh: ``(9, 3)``: also render the bare geometry (grey ``geometry_albedo`` under this
            lighting) from the same raster.
        geometry_albedo: linear grey of the bare geometry.

    Returns:
        ``(H, W, 4)`` float32: sRGB colour and coverage (0 or 1), both in ``[0, 1]``; with
        ``geometry_sh``, the pair ``(textured, geometry)``.
    """
    v = np.asarray(vertices, np.float64)
    depth = -v[:, 2]
    xy = np.stack([principal[0] + focal[0] * v[:, 0] / depth, principal[1] - focal[1] * v[:, 1] / depth], -1)
    raster = rasterize(xy, depth, triangles, size)
    normals = vertex_normals(v, triangles)
    coverage = raster.mask[..., None].astype(np.float32)

    def shade(colour: np.ndarray) -> np.ndarray:
        image = linear_to_srgb(interpolate(raster, triangles, colour))
        return np.concatenate([image, coverage], -1).astype(np.float32)

    textured = shade(np.asarray(vertex_albedo, np.float64) * sh_shading(normals, sh))
    if geometry_sh is None:
        return textured
    return textured, shade(np.clip(geometry_albedo * sh_shading(normals, geometry_sh), 0.0, None))
