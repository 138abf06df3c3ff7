"""Rasterisation: which triangle is visible at each pixel centre, with differentiable barycentrics.

Conventions are nvdiffrast's. Vertices come in clip space ``(x, y, z, w)``; a pixel at row
``i``, column ``j`` has its centre at NDC ``x = 2 (j + 0.5) / W - 1``, ``y = 2 (i + 0.5) / H - 1``,
so row 0 lies at NDC ``y = -1``. (:class:`~facenet3d.render.camera.PinholeCamera` puts the top of
the image at NDC ``y = -1``, so its renders come out with row 0 at the top.) No face culling.

The torch implementation shares one per-triangle setup (screen positions, edges, barycentric
planes) between two passes:

1. **Visibility, without gradients.** Triangles are sorted into classes by the size of their
   pixel bounding box, rounded up to a power of two ``S``; each class tests its triangles against
   an ``S x S`` stencil of pixel centres with broadcast edge functions (no per-pixel Python loop, no
   pixels x triangles tensor). Every covered candidate carries a 64-bit key, its ``z/w`` quantised
   to ``2^-29`` above the triangle index, and one ``scatter_reduce(amin)`` per class keeps the
   nearest triangle at each pixel (ties go to the lower index).
2. **Barycentrics, differentiable.** At each covered pixel the perspective-correct barycentrics
   of the chosen triangle are recomputed from ``pos``: with screen-space barycentrics ``l_i`` (affine
   in the pixel position), ``b_i ~ l_i / w_i``. The chain rule back to ``pos`` is written by hand
   (:class:`_RasterizeFunction`): autograd through the ~100 small operations costs several times
   more on CPU.

Clipping: a triangle with a vertex at ``w <= 0`` (at or behind the camera plane) is dropped
whole; one entirely in front is kept and cut per pixel where ``z/w`` leaves ``[-1, 1]`` (near and
far planes), which is exactly what clipping does for those triangles. Degenerate (zero-area) and
non-finite triangles cover nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facenet3d.errors import RenderError
from facenet3d.render import nvdiffrast_backend
from facenet3d.render.backend import resolve_backend

# A pixel centre on a shared edge must not fall in a crack between its two triangles because of
# rounding, so the inside test accepts barycentrics down to -_INSIDE_EPS; the depth test then
# settles the (rare) double coverage.
_INSIDE_EPS = 1e-5
# Largest number of (triangle, pixel) candidates tested at once, to bound memory.
_MAX_CANDIDATES = 1 << 22
_NO_HIT = torch.iinfo(torch.int64).max
_TRI_BITS = 31


def rasterize(
    pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int], backend: str | None = None
) -> torch.Tensor:
    """Rasterise a batch of triangle meshes sharing one topology.

    Args:
        pos: ``(B, V, 4)`` clip-space vertex positions ``(x, y, z, w)``, float.
        tri: ``(F, 3)`` int vertex indices (any winding: no culling).
        resolution: ``(H, W)`` output size in pixels.
        backend: ``"torch"``, ``"nvdiffrast"``, ``"auto"`` or None for the current
            :func:`~facenet3d.render.use_backend` choice.

    Returns:
        ``rast`` ``(B, H, W, 4)``: ``(u, v, z/w, triangle_id + 1)`` of the nearest triangle at each
        pixel centre, all zero where no triangle covers it. ``u`` and ``v`` are the
        perspective-correct barycentric weights of the triangle's vertices 0 and 1 (vertex 2 gets
        ``1 - u - v``); they carry gradients to ``pos`` (``z/w`` does not, as in nvdiffrast). Unlike
        nvdiffrast, no ``rast_db`` is returned.

    Example:
        >>> pos = torch.tensor([[[-1., -1, 0, 1], [3, -1, 0, 1], [-1, 3, 0, 1]]])
        >>> rasterize(pos, torch.tensor([[0, 1, 2]]), (2, 2))[0, 0, 0]
        tensor([0.7500, 0.1250, 0.0000, 1.0000])
    """
    return rasterize_fragments(pos, tri, resolution, backend)[0]


@dataclass
class Fragments:
    """The covered pixels of a raster in compact form: what interpolation works on.

    Attributes:
        pixels: ``(M,)`` int64 flat indices into ``B * H * W``.
        triangles: ``(M,)`` int64 index of each pixel's triangle.
        images: ``(M,)`` int64 index of each pixel's image in the batch.
        uv: ``(M, 2)`` perspective-correct barycentrics ``(u, v)``, differentiable.
        shape: ``(B, H, W)``.
    """

    pixels: torch.Tensor
    triangles: torch.Tensor
    images: torch.Tensor
    uv: torch.Tensor
    shape: tuple[int, int, int]

    @classmethod
    def from_rast(cls, rast: torch.Tensor) -> Fragments:
        """The fragments of a ``(B, H, W, 4)`` ``rast`` from any backend (``uv`` stays differentiable)."""
        check_rast(rast)
        b, h, w = rast.shape[:3]
        tri_id = rast_triangles(rast)
        pixels = covered_pixels(tri_id)
        uv = rast.reshape(-1, 4).index_select(0, pixels)[:, :2]
        return cls(pixels, tri_id.reshape(-1).index_select(0, pixels), pixels // (h * w), uv, (b, h, w))


def rasterize_fragments(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
                        backend: str | None = None) -> tuple[torch.Tensor, Fragments]:
    """:func:`rasterize`, also returning the covered pixels in compact form.

    Interpolating from the fragments (:func:`~facenet3d.render.interpolate.interpolate_fragments`)
    skips finding the covered pixels again and keeps gradients compact; :class:`Renderer` uses it.

    Returns:
        ``(rast (B, H, W, 4), fragments)``.
    """
    _check_pos_tri(pos, tri)
    h, w = (int(r) for r in resolution)
    if h <= 0 or w <= 0:
        raise RenderError(f"resolution must be positive, got {tuple(resolution)}")
    if resolve_backend(backend, pos) == "nvdiffrast":
        rast = nvdiffrast_backend.rasterize(pos, tri, (h, w))
        return rast, Fragments.from_rast(rast)
    rast, values, pixels, triangles = _RasterizeFunction.apply(pos, tri.to(device=pos.device, dtype=torch.int64),
                                                               (h, w))
    b = pos.shape[0]
    return rast, Fragments(pixels, triangles, pixels // (h * w), values[:, :2], (b, h, w))


def _check_pos_tri(pos: torch.Tensor, tri: torch.Tensor) -> None:
    if pos.ndim != 3 or pos.shape[-1] != 4:
        raise RenderError(f"pos must be (B, V, 4) clip-space positions, got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise RenderError(f"pos must be floating point, got {pos.dtype}")
    if tri.ndim != 2 or tri.shape[-1] != 3 or tri.is_floating_point():
        raise RenderError(f"tri must be (F, 3) integer vertex indices, got {tuple(tri.shape)} {tri.dtype}")
    if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= pos.shape[1]):
        raise RenderError(f"tri indexes vertices outside 0..{pos.shape[1] - 1}")
    if tri.shape[0] >= 1 << _TRI_BITS:
        raise RenderError(f"at most {(1 << _TRI_BITS) - 1} triangles, got {tri.shape[0]}")


class _Setup:
    """Per-triangle screen-space quantities shared by the visibility and barycentric passes.

    Layout is (quantity, corner, triangle) with triangles of all images along the last axis
    (``T = B * F``), so that every operation runs over long contiguous rows.
    """

    def __init__(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]):
        b, v = pos.shape[:2]
        h, w = resolution
        f = tri.shape[0]
        self.shape = (b, v, f, h, w)
        self.corners = corner_index(tri, b, v)  # (3, T) rows into the flattened (B * V) vertices
        c = torch.gather(pos.detach().permute(2, 0, 1).reshape(4, b * v), 1,
                         self.corners.reshape(1, -1).expand(4, -1)).view(4, 3, b * f)
        cw = c[3]
        self.safe_w = torch.where(cw > 0, cw, 1.0)  # (3, T)
        # Pixel coordinates (x right, y along rows) and z/w of every corner.
        half = c.new_tensor([0.5 * w, 0.5 * h, 1.0])[:, None, None]
        offset = c.new_tensor([0.5 * w, 0.5 * h, 0.0])[:, None, None]
        self.screen = torch.addcmul(offset, c[:3] / self.safe_w, half)  # (3 [x, y, z], 3, T)
        xy_j = self.screen[:2].roll(-1, 1)
        edge = self.screen[:2].roll(-2, 1) - xy_j  # edge i: corner i + 1 -> corner i + 2, (2, 3, T)
        self.ex, self.ey = edge[0], edge[1]
        self.area = self.ex[1] * self.ey[2] - self.ey[1] * self.ex[2]  # twice the signed area, (T,)
        z = self.screen[2]
        # NaN anywhere makes these comparisons false; infinities make the area non-finite.
        self.ok = ((cw.amin(0) > 0) & (self.area.abs() > 0) & torch.isfinite(self.area) & (z.amin(0) <= 1)
                   & (z.amax(0) >= -1))
        self.inv_area = torch.where(self.ok, 1.0 / torch.where(self.ok, self.area, 1.0), 0.0)
        # lam_i(p) = lam_a[i] (p_x - x_j) + lam_b[i] (p_y - y_j): the screen barycentric of corner i.
        self.lam_a, self.lam_b = -self.ey * self.inv_area, self.ex * self.inv_area  # (3, T)
        self.xy_j = xy_j


@torch.no_grad()
def visible_triangles(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """Index of the nearest triangle covering each pixel centre (the visibility pass, no gradients).

    Args:
        pos: ``(B, V, 4)`` clip-space positions.
        tri: ``(F, 3)`` int64 vertex indices on ``pos``'s device.
        resolution: ``(H, W)``.

    Returns:
        ``(B, H, W)`` int64 triangle index, ``-1`` where no triangle covers the pixel centre.
    """
    if tri.shape[0] == 0 or pos.shape[1] == 0:
        return torch.full((pos.shape[0], *resolution), -1, dtype=torch.int64, device=pos.device)
    return _visibility(_Setup(pos, tri, resolution))


def _visibility(setup: _Setup) -> torch.Tensor:
    """``(B, H, W)`` nearest triangle index per pixel (``-1``: none) from a triangle setup."""
    b, _, f, h, w = setup.shape
    device = setup.area.device
    z = setup.screen[2]
    ok = setup.ok
    # Bounding box of the pixel centres inside the triangle's box, clamped to the image; floats
    # are clamped first so that a huge coordinate cannot overflow the integer conversion.
    big = float(max(w, h) + 1)
    lo = torch.ceil(setup.screen[:2].amin(1).clamp(-1.0, big) - 0.5).clamp_min(0.0)  # (2, T)
    limit = lo.new_tensor([w - 1.0, h - 1.0])[:, None]
    count = torch.minimum(torch.floor(setup.screen[:2].amax(1).clamp(-1.0, big) - 0.5), limit) - lo + 1
    ok = ok & (count[0] > 0) & (count[1] > 0)
    lo = torch.where(ok, lo, 0.0)
    count = torch.where(ok, count, 0.0)

    # Barycentric plane of each corner over the box: lam_i = c_i + a_i dx + b_i dy, with (dx, dy)
    # the pixel offset from the box's first pixel centre; all three are >= 0 inside, either winding.
    lam_a, lam_b = setup.lam_a, setup.lam_b
    lam_c = lam_a * (lo[0] + 0.5 - setup.xy_j[0]) + lam_b * (lo[1] + 0.5 - setup.xy_j[1])
    z = torch.where(ok, z, 0.0)  # z/w is affine in screen space: the same planes carry it
    planes = torch.cat([lam_a, lam_b, lam_c, (lam_a * z).sum(0, keepdim=True), (lam_b * z).sum(0, keepdim=True),
                        (lam_c * z).sum(0, keepdim=True)]).float()  # (12, T)
    count, lo = count.long(), lo.long()
    image = torch.arange(b, device=device).repeat_interleave(f)
    boxes = torch.stack([count[0], count[1], image * (h * w) + lo[1] * w + lo[0],
                         torch.arange(f, device=device).repeat(b)])  # (4, T)
    # Size classes: stencils of 2, 4, 8, ... pixels a side.
    size_class = torch.ceil(torch.log2(torch.maximum(count[0], count[1]).clamp_min(2).float())).long() - 1
    size_class = torch.where(ok, size_class, -1)
    clip_z = not bool(((z.amin(0) >= -1) & (z.amax(0) <= 1) | ~ok).all())

    buffer = torch.full((b * h * w + 1,), _NO_HIT, dtype=torch.int64, device=device)  # last: discard slot
    counts = torch.bincount(size_class + 1).tolist()
    # The smallest stencil runs over every triangle without gathering them (most triangles of a
    # face mesh fit it); larger boxes are clipped to it here and done in full by their own class
    # below, which tests those first pixels again: harmless, the minimum is idempotent.
    small = torch.stack([boxes[0].clamp_max(2), boxes[1].clamp_max(2), boxes[2], boxes[3]])
    if 4 * planes.shape[1] <= _MAX_CANDIDATES:
        _splat(buffer, planes, small, 2, w, clip_z)
    else:  # huge meshes: chunk the triangles
        for first in range(0, planes.shape[1], _MAX_CANDIDATES // 4):
            last = first + _MAX_CANDIDATES // 4
            _splat(buffer, planes[:, first:last], small[:, first:last], 2, w, clip_z)
    for cls, n in enumerate(counts[2:], start=1):
        if n == 0:
            continue
        chosen = (size_class == cls).nonzero().view(-1)
        stencil = 2 << cls
        per_chunk = max(1, _MAX_CANDIDATES // (stencil * stencil))
        for first in range(0, n, per_chunk):
            idx = chosen[first:first + per_chunk]
            _splat(buffer, _columns(planes, idx), _columns(boxes, idx), stencil, w, clip_z)

    hit = buffer[:-1]
    return torch.where(hit == _NO_HIT, -1, hit & ((1 << _TRI_BITS) - 1)).view(b, h, w)


def _columns(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[:, index]`` for a 2-D table (a gather: much faster than advanced indexing on CPU)."""
    return torch.gather(table, 1, index[None].expand(table.shape[0], -1))


def _splat(buffer: torch.Tensor, planes: torch.Tensor, boxes: torch.Tensor, stencil: int, width: int,
           clip_z: bool) -> None:
    """Depth-test ``K`` triangles over their ``stencil x stencil`` pixel boxes into ``buffer``.

    ``planes`` ``(12, K)``: barycentric and depth planes; ``boxes`` ``(4, K)``: box width,
    height, first pixel's flat index and triangle index.
    """
    # Stencil offsets along dim 0 and triangles along dim 1 keep the inner loops long.
    offsets = torch.arange(stencil * stencil, device=planes.device)[:, None]
    oy, ox = offsets // stencil, offsets % stencil
    fx, fy = ox.float(), oy.float()
    inside = (ox < boxes[0]) & (oy < boxes[1])
    for i in range(3):
        inside &= torch.addcmul(planes[6 + i], planes[i], fx).addcmul_(planes[3 + i], fy) >= -_INSIDE_EPS
    z = torch.addcmul(planes[11], planes[9], fx).addcmul_(planes[10], fy)  # (S*S, K)
    if clip_z:
        inside &= (z >= -1) & (z <= 1)
    pixel = torch.where(inside, boxes[2] + (oy * width + ox), buffer.shape[0] - 1)
    # Key: (z + 1) 2^29, i.e. z/w to 2^-29 (finer than float32 resolves it near 1), above the index.
    key = ((z + 1.0) * (1 << 29)).long().mul_(1 << _TRI_BITS).add_(boxes[3])
    buffer.scatter_reduce_(0, pixel.view(-1), key.view(-1), "amin")


def check_rast(rast: torch.Tensor) -> None:
    """Raise :class:`RenderError` unless ``rast`` is a ``(B, H, W, 4)`` float raster."""
    if rast.ndim != 4 or rast.shape[-1] != 4 or not rast.is_floating_point():
        raise RenderError(f"rast must be a (B, H, W, 4) float tensor from rasterize, got {tuple(rast.shape)}")


def rast_triangles(rast: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` int64 triangle index of each pixel of a ``(B, H, W, 4)`` ``rast``, ``-1`` on the background."""
    return rast[..., 3].detach().long() - 1  # ids are exact in float32 up to 2^24


def covered_pixels(tri_id: torch.Tensor) -> torch.Tensor:
    """``(M,)`` flat indices (into ``B * H * W``) of the pixels some triangle covers."""
    return (tri_id.reshape(-1) >= 0).nonzero().view(-1)


def corner_index(tri: torch.Tensor, batch: int, num_vertices: int) -> torch.Tensor:
    """``(3, batch * F)`` rows of each triangle corner in a ``(batch * V, ...)`` flattened vertex table."""
    offsets = (torch.arange(batch, device=tri.device) * num_vertices)[:, None]
    return (tri.t()[:, None, :] + offsets).reshape(3, -1)


class _RasterizeFunction(torch.autograd.Function):
    """Visibility plus perspective-correct barycentrics at the covered pixels, backward by hand.

    With corners in pixel coordinates ``s_i = (x_i, y_i) / w_i * (W, H) / 2 + (W, H) / 2`` and the
    offset ``d = p - s_2`` of a pixel centre ``p``, the screen barycentrics are ``l_0 = beta_0 . d``,
    ``l_1 = beta_1 . d`` (``beta_i = (-e_iy, e_ix) / A``, edges ``e_0 = s_2 - s_1``, ``e_1 = s_0 - s_2``,
    ``A = e_1 x e_0``) and ``l_2 = 1 - l_0 - l_1``; the perspective-correct ones are ``b_i ~ l_i / w_i``,
    i.e. ``u = l_0 r_0 / (l_0 r_0 + l_1 r_1 + l_2)`` with ``r_i = w_2 / w_i``, and
    ``z/w = z_2 + (z_0 - z_2) l_0 + (z_1 - z_2) l_1``. Working relative to ``s_2`` keeps float32
    accurate for small triangles. Each covered pixel reads one row of the per-triangle table
    ``(s_2, beta_0, beta_1, r_0, r_1, z_2, z_0 - z_2, z_1 - z_2)``.
    """

    @staticmethod
    def forward(ctx, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        b, v = pos.shape[:2]
        h, w = resolution
        ctx.set_materialize_grads(False)
        ctx.pos_shape = pos.shape
        if tri.shape[0] == 0 or v == 0:
            ctx.empty = True
            empty = torch.zeros(0, dtype=torch.int64, device=pos.device)
            ctx.mark_non_differentiable(empty)
            return pos.new_zeros(b, h, w, 4), pos.new_zeros(0, 4), empty, empty
        ctx.empty = False
        setup = _Setup(pos, tri, resolution)
        tri_id = _visibility(setup)
        sx, sy, sz = setup.screen
        sw = setup.safe_w
        table = torch.stack([sx[2], sy[2], setup.lam_a[0], setup.lam_b[0], setup.lam_a[1], setup.lam_b[1],
                             sw[2] / sw[0], sw[2] / sw[1], sz[2], sz[0] - sz[2], sz[1] - sz[2]], 1)
        # Rows of culled triangles are never read by a covered pixel, but must be finite.
        table = torch.nan_to_num_(table, nan=0.0, posinf=0.0, neginf=0.0)  # (T, 11)

        pixels = covered_pixels(tri_id)  # only covered pixels are computed; the background stays 0
        ids = tri_id.reshape(-1).index_select(0, pixels)
        rem = pixels % (h * w)
        rows = ids + pixels // (h * w) * tri.shape[0] if b > 1 else ids
        t = table.index_select(0, rows)  # (M, 11)
        s2x, s2y, b0x, b0y, b1x, b1y, r0, r1, z2, z02, z12 = t.unbind(1)
        dx = (rem % w).to(pos.dtype).add_(0.5).sub_(s2x)
        dy = (rem // w).to(pos.dtype).add_(0.5).sub_(s2y)
        l0 = b0x * dx + b0y * dy
        l1 = b1x * dx + b1y * dy
        p0, p1 = l0 * r0, l1 * r1
        inv = 1.0 / (p0 + p1 + 1 - l0 - l1)
        values = pos.new_empty(rows.shape[0], 4)  # columns written in place: no interleaving copy
        torch.mul(p0, inv, out=values[:, 0])
        torch.mul(p1, inv, out=values[:, 1])
        torch.addcmul(z2, z02, l0, out=values[:, 2]).addcmul_(z12, l1)
        values[:, 3] = ids + 1
        out = pos.new_zeros(b * h * w, 4).index_copy_(0, pixels, values)
        ctx.save_for_backward(t, rows, pixels, dx, dy, l0, l1, inv, values, setup.corners, setup.screen,
                              sw, setup.ex, setup.ey, setup.inv_area)
        ctx.half = (0.5 * w, 0.5 * h)
        ctx.mark_non_differentiable(pixels, ids)
        return out.view(b, h, w, 4), values, pixels, ids

    @staticmethod
    def backward(ctx, grad_rast: torch.Tensor | None, grad_values: torch.Tensor | None, _pixels, _ids):
        if ctx.empty or (grad_rast is None and grad_values is None):
            return None, None, None
        t, rows, pixels, dx, dy, l0, l1, inv, out, corners, screen, sw, ex, ey, inv_area = ctx.saved_tensors
        # Gradients reach (u, v) through the dense raster, the compact fragments, or both.
        grad = grad_values
        if grad_rast is not None:
            dense = grad_rast.reshape(-1, 4).index_select(0, pixels)
            grad = dense if grad is None else grad + dense
        b0x, b0y, b1x, b1y, r0, r1 = t[:, 2:8].unbind(1)
        gu, gv = grad[:, 0], grad[:, 1]  # like nvdiffrast, z/w and the id pass no gradient
        # Per pixel: u = p0 / s, v = p1 / s, s = p0 + p1 + 1 - l0 - l1, p_i = l_i r_i.
        g_s = -(gu * out[:, 0] + gv * out[:, 1]) * inv
        g_p0 = gu * inv + g_s
        g_p1 = gv * inv + g_s
        g_l0 = g_p0 * r0 - g_s
        g_l1 = g_p1 * r1 - g_s
        grad_rows = t.new_empty(t.shape[0], 8)
        torch.neg(g_l0 * b0x + g_l1 * b1x, out=grad_rows[:, 0])  # s_2 enters through d = p - s_2
        torch.neg(g_l0 * b0y + g_l1 * b1y, out=grad_rows[:, 1])
        torch.mul(g_l0, dx, out=grad_rows[:, 2])
        torch.mul(g_l0, dy, out=grad_rows[:, 3])
        torch.mul(g_l1, dx, out=grad_rows[:, 4])
        torch.mul(g_l1, dy, out=grad_rows[:, 5])
        torch.mul(g_p0, l0, out=grad_rows[:, 6])
        torch.mul(g_p1, l1, out=grad_rows[:, 7])
        num_tri = inv_area.shape[0]
        g = t.new_zeros(num_tri, 8).index_add_(0, rows, grad_rows)  # per triangle
        g_s2x, g_s2y, g_b0x, g_b0y, g_b1x, g_b1y, g_r0, g_r1 = g.unbind(1)
        # beta_0 = (-e0y, e0x) / A, beta_1 = (-e1y, e1x) / A, A = e1y e0x - e1x e0y; e_0 is edge 0
        # (corner 1 -> 2), e_1 edge 1 (corner 2 -> 0).
        e0x, e0y, e1x, e1y = ex[0], ey[0], ex[1], ey[1]
        g_area = (g_b0x * e0y - g_b0y * e0x + g_b1x * e1y - g_b1y * e1x) * inv_area * inv_area
        g_e0x = g_b0y * inv_area + g_area * e1y
        g_e0y = -g_b0x * inv_area - g_area * e1x
        g_e1x = g_b1y * inv_area - g_area * e0y
        g_e1y = -g_b1x * inv_area + g_area * e0x
        g_sx = torch.stack([g_e1x, -g_e0x, g_s2x + g_e0x - g_e1x])  # (3 corners, T)
        g_sy = torch.stack([g_e1y, -g_e0y, g_s2y + g_e0y - g_e1y])
        g_w = torch.stack([-g_r0 * sw[2] / (sw[0] * sw[0]), -g_r1 * sw[2] / (sw[1] * sw[1]),
                           g_r0 / sw[0] + g_r1 / sw[1]])
        # s = (x, y) / w * half + half: ds/dx = half / w, ds/dw = -(s - half) / w.
        half_w, half_h = ctx.half
        g_corner = torch.stack([g_sx * half_w / sw, g_sy * half_h / sw, torch.zeros_like(g_w),
                                g_w - (g_sx * (screen[0] - half_w) + g_sy * (screen[1] - half_h)) / sw], -1)
        b, v = ctx.pos_shape[:2]
        grad_pos = g_corner.new_zeros(b * v, 4).index_add_(0, corners.reshape(-1), g_corner.reshape(-1, 4))
        return grad_pos.view(ctx.pos_shape), None, None
