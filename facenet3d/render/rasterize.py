"""Rasterisation: which triangle is visible at each pixel centre, with differentiable barycentrics.

Conventions are nvdiffrast's. Vertices come in clip space ``(x, y, z, w)``; a pixel at row
``i``, column ``j`` has its centre at NDC ``x = 2 (j + 0.5) / W - 1``, ``y = 2 (i + 0.5) / H - 1``,
so row 0 lies at NDC ``y = -1``. (:class:`~facenet3d.render.camera.PinholeCamera` puts the top of
the image at NDC ``y = -1``, so its renders come out with row 0 at the top.) No face culling.

The torch implementation shares one per-triangle setup (screen positions, edges, barycentric
planes) between two passes:

1. **Visibility, without gradients.** Triangles are sorted into classes by the size of their
   pixel bounding box, each side rounded up to the next of 2, 3, 4, 6, 8, 12, ... (a class too
   sparse to pay for a pass of its own joins a larger stencil); each class, a slice of the sorted
   per-triangle table, tests its triangles against an ``Sx x Sy`` stencil of pixel centres with
   broadcast edge functions (no per-pixel Python loop, no pixels x triangles tensor). Every
   candidate carries a 64-bit key, its ``z/w`` quantised to ``2^-29`` above the triangle index
   (a miss's key lies beyond any hit's), and one ``scatter_reduce(amin)`` per class keeps the
   nearest triangle at each pixel (ties go to the lower index).
2. **Barycentrics, differentiable.** At each covered pixel the perspective-correct barycentrics
   of the chosen triangle are recomputed from ``pos``: with screen-space barycentrics ``l_i`` (affine
   in the pixel position), ``b_i ~ l_i / w_i``. The chain rule back to ``pos`` is written by hand
   (:class:`_RasterizeFunction`): autograd through the ~100 small operations costs several times
   more on CPU.

Per-triangle and per-pixel tables are laid out one row per quantity (``(quantity, T)``,
``(quantity, M)``): on CPU an elementwise operation over a contiguous row costs a fraction of the
same operation over a strided column, and gathers and scatters along the long axis
(``index_select(1, ...)``, ``index_add_(1, ...)``) are several times faster than moving short rows
along axis 0. Index tensors that depend only on the topology (corner rows, flat channel indices)
are built once per triangle tensor (:func:`cached_on`).

Clipping: a triangle with a vertex at ``w <= 0`` (at or behind the camera plane) is dropped
whole; one entirely in front is kept and cut per pixel where ``z/w`` leaves ``[-1, 1]`` (near and
far planes), which is exactly what clipping does for those triangles. Degenerate (zero-area) and
non-finite triangles cover nothing.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from facenet3d.errors import RenderError
from facenet3d.render import nvdiffrast_backend
from facenet3d.render.backend import resolve_backend

# A pixel centre on a shared edge must not fall in a crack between its two triangles because of
# rounding, so the inside test accepts barycentrics down to -_INSIDE_EPS; the depth test then
# settles the (rare) double coverage.
_INSIDE_EPS = 1e-5
# Largest number of (triangle, pixel) candidates tested at once, to bound memory.
_MAX_CANDIDATES = 1 << 20
_TRI_BITS = 31
_TRI_MASK = (1 << _TRI_BITS) - 1
# Depth-test keys are (z/w + 1) 2^29 above the triangle index. A candidate outside its triangle
# gets z/w = _MISS_Z, i.e. a key of at least _MISS, beyond any hit's (z/w <= 1).
_MISS_Z = 3.0
_MISS = int(_MISS_Z + 1) << (29 + _TRI_BITS)
# Images up to this many pixels read pixel centres from a cached table instead of dividing indices.
_CENTRE_TABLE_MAX = 1 << 18
_CACHE_SIZE = 16
# A stencil pass costs about as much as testing this many candidates (per-operation overheads),
# so a sparse class is tested with a larger stencil that runs anyway when that costs less.
_PASS_COST = 8192

_T = TypeVar("_T")
_cache: dict[tuple, tuple[weakref.ref, object]] = {}


def cached_on(tensor: torch.Tensor, key: tuple, build: Callable[[], _T]) -> _T:
    """``build()``, remembered for as long as ``tensor`` lives unmodified.

    For constants derived from a triangle index buffer (corner rows, flat gather indices, its index
    range): a renderer passes the same ``tri`` every step, so they are built once per topology.
    Entries are keyed on the tensor's identity and version counter (an in-place change invalidates
    them); beyond a few, the oldest are dropped. The values are shared: never modify them in place.
    """
    try:
        version = tensor._version
    except RuntimeError:  # inference-mode tensors carry no version counter: nothing safe to key on
        return build()
    full_key = (id(tensor), version, *key)
    entry = _cache.get(full_key)
    if entry is not None and entry[0]() is tensor:
        return entry[1]
    value = build()
    _cache[full_key] = (weakref.ref(tensor), value)
    while len(_cache) > _CACHE_SIZE:
        _cache.pop(next(iter(_cache)), None)
    return value


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


def fragments_of(rast: torch.Tensor) -> Fragments:
    """The covered pixels of a ``(B, H, W, 4)`` raster in compact form.

    For a raster as :func:`rasterize` returned it (not modified in place since), these are the
    fragments the rasteriser found, remembered on the tensor: nothing is searched again, and their
    ``uv`` carries gradients to the positions directly, without passing through a dense image.
    For any other raster (e.g. a detached copy) they are found from its contents, once.
    """
    try:
        version = rast._version
    except RuntimeError:  # inference-mode tensors carry no version counter: nothing safe to key on
        return Fragments.from_rast(rast)
    entry = getattr(rast, "_facenet3d_fragments", None)
    if entry is not None and entry[0] == version:
        return entry[1]
    fragments = Fragments.from_rast(rast)
    _remember(rast, fragments)
    return fragments


def _remember(rast: torch.Tensor, fragments: Fragments) -> None:
    """Keep ``fragments`` on ``rast`` for :func:`fragments_of` (they live and die with it)."""
    try:
        rast._facenet3d_fragments = (rast._version, fragments)
    except RuntimeError:
        pass


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
    _slots: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_rast(cls, rast: torch.Tensor) -> Fragments:
        """The fragments of a ``(B, H, W, 4)`` ``rast`` from any backend (``uv`` stays differentiable)."""
        check_rast(rast)
        b, h, w = rast.shape[:3]
        tri_id = rast_triangles(rast)
        pixels = covered_pixels(tri_id)
        uv = rast.reshape(-1).index_select(0, channel_slots(pixels, 4, 2).view(-1)).view(2, -1).t()
        return cls(pixels, tri_id.reshape(-1).index_select(0, pixels), pixels // (h * w), uv, (b, h, w))

    def channel_slots(self, channels: int) -> torch.Tensor:
        """``(C, M)`` flat indices of the covered pixels' channels in a ``(B * H * W * C)`` image
        (see :func:`channel_slots`; computed once per channel count)."""
        if channels not in self._slots:
            self._slots[channels] = channel_slots(self.pixels, channels)
        return self._slots[channels]

    def to_image(self, values: torch.Tensor) -> torch.Tensor:
        """Scatter ``(M, C)`` values at the covered pixels into a ``(B, H, W, C)`` image, zero elsewhere.

        Differentiable in ``values``; one flat scatter (and one flat gather backward), which on CPU
        is several times faster than moving ``C``-element rows.
        """
        b, h, w = self.shape
        c = values.shape[-1]
        # In place into fresh zeros (autograd allows it: they need no gradient), saving the copy
        # an out-of-place scatter makes.
        image = values.new_zeros(b * h * w * c).scatter_(0, self.channel_slots(c).view(-1), values.t().reshape(-1))
        return image.view(b, h, w, c)


def channel_slots(pixels: torch.Tensor, channels: int, count: int | None = None) -> torch.Tensor:
    """Flat indices of pixel channels in a channels-last image.

    Args:
        pixels: ``(M,)`` flat pixel indices into ``B * H * W``.
        channels: ``C``, the image's channel count.
        count: how many leading channels to index (default: all ``C``).

    Returns:
        ``(count, M)`` int64: ``pixels * C + c`` for ``c < count``, channel-major, so that a
        ``(count, M)`` table of values moves to or from the ``(B * H * W * C)`` image in one call.
    """
    offsets = torch.arange(channels if count is None else count, device=pixels.device)[:, None]
    return (pixels * channels)[None] + offsets


def rasterize_fragments(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
                        backend: str | None = None, visible: Fragments | None = None
                        ) -> tuple[torch.Tensor, Fragments]:
    """:func:`rasterize`, also returning the covered pixels in compact form.

    Interpolating from the fragments (:func:`~facenet3d.render.interpolate.interpolate_fragments`)
    skips finding the covered pixels again and keeps gradients compact; :class:`Renderer` uses it.

    Args:
        pos, tri, resolution, backend: as for :func:`rasterize`.
        visible: fragments of an earlier raster of ``tri`` at ``resolution`` (torch backend): keep
            its pixels and their triangles, skipping the visibility search (most of the cost), and
            compute only the barycentrics and depth for ``pos``, differentiably as usual. Outside
            its triangle (the mesh moved) a pixel's barycentrics extrapolate the triangle's plane.
            For a fit whose mesh moves by a fraction of a pixel between rasters; the visibility
            found with the same positions gives exactly :func:`rasterize`'s result.

    Returns:
        ``(rast (B, H, W, 4), fragments)``.
    """
    _check_pos_tri(pos, tri)
    h, w = (int(r) for r in resolution)
    if h <= 0 or w <= 0:
        raise RenderError(f"resolution must be positive, got {tuple(resolution)}")
    if resolve_backend(backend, pos) == "nvdiffrast":  # fast enough to rasterise every time
        rast = nvdiffrast_backend.rasterize(pos, tri, (h, w))
        return rast, fragments_of(rast)
    if visible is not None and visible.shape != (pos.shape[0], h, w):
        raise RenderError(f"visible fragments are of {visible.shape} images, not {(pos.shape[0], h, w)}")
    rast, uv, pixels, triangles, images = _RasterizeFunction.apply(
        pos, tri.to(device=pos.device, dtype=torch.int64), (h, w), visible)
    fragments = Fragments(pixels, triangles, images, uv, (pos.shape[0], h, w))
    _remember(rast, fragments)
    return rast, fragments


def index_range(tri: torch.Tensor) -> tuple[int, int]:
    """``(min, max)`` of an index tensor (``(0, -1)`` when empty), cached on the tensor."""
    if tri.numel() == 0:
        return 0, -1
    return cached_on(tri, ("range",), lambda: (int(tri.min()), int(tri.max())))


def _check_pos_tri(pos: torch.Tensor, tri: torch.Tensor) -> None:
    if pos.ndim != 3 or pos.shape[-1] != 4:
        raise RenderError(f"pos must be (B, V, 4) clip-space positions, got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise RenderError(f"pos must be floating point, got {pos.dtype}")
    if tri.ndim != 2 or tri.shape[-1] != 3 or tri.is_floating_point():
        raise RenderError(f"tri must be (F, 3) integer vertex indices, got {tuple(tri.shape)} {tri.dtype}")
    low, high = index_range(tri)
    if low < 0 or high >= pos.shape[1]:
        raise RenderError(f"tri indexes vertices outside 0..{pos.shape[1] - 1}")
    if tri.shape[0] >= 1 << _TRI_BITS:
        raise RenderError(f"at most {(1 << _TRI_BITS) - 1} triangles, got {tri.shape[0]}")


@functools.lru_cache(maxsize=16)
def _viewport(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """NDC to pixels for an ``H x W`` image: ``(3, 1, 1)`` scale and offset of ``(x, y, z)`` (z
    stays z/w), and the ``(2, 1)`` last pixel column and row (shared: do not modify)."""
    half = torch.tensor([0.5 * w, 0.5 * h, 1.0], dtype=dtype, device=device)[:, None, None]
    offset = torch.tensor([0.5 * w, 0.5 * h, 0.0], dtype=dtype, device=device)[:, None, None]
    return half, offset, torch.tensor([[w - 1.0], [h - 1.0]], dtype=dtype, device=device)


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
        # (x, y, z, w) of every corner: one flat gather from the flattened (B * V * 4) positions.
        index = corner_channel_index(tri, b, v, 4)  # (4, 3, T)
        c = pos.detach().reshape(-1).index_select(0, index.view(-1)).view(4, 3, b * f)
        cw = c[3]
        self.safe_w = torch.where(cw > 0, cw, 1.0)  # (3, T)
        self.ndc = c[:3] / self.safe_w  # (3 [x, y, z], 3, T)
        # Pixel coordinates (x right, y along rows) and z/w of every corner.
        half, offset, _ = _viewport(h, w, c.dtype, c.device)
        self.screen = torch.addcmul(offset, self.ndc, half)  # (3 [x, y, z], 3, T)
        xy_j = self.screen[:2].roll(-1, 1)
        edge = self.screen[:2].roll(-2, 1) - xy_j  # edge i: corner i + 1 -> corner i + 2, (2, 3, T)
        self.ex, self.ey = edge[0], edge[1]
        self.area = self.ex[1] * self.ey[2] - self.ey[1] * self.ex[2]  # twice the signed area, (T,)
        self.z_range = torch.aminmax(self.screen[2], dim=0)  # nearest and farthest corner's z/w, (T,) each
        # NaN anywhere makes these comparisons false; infinities make the area non-finite.
        self.ok = ((cw.amin(0) > 0) & (self.area != 0) & torch.isfinite(self.area) & (self.z_range.min <= 1)
                   & (self.z_range.max >= -1))
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
    hits = _nearest_hits(_Setup(pos, tri, resolution))
    return torch.where(hits >= _MISS, -1, hits & _TRI_MASK).view(pos.shape[0], *resolution)


def _nearest_hits(setup: _Setup) -> torch.Tensor:
    """``(B * H * W,)`` int64 depth-test keys from a triangle setup: ``_MISS`` or more where no triangle
    covers the pixel centre, else the winner's quantised ``z/w`` above its index (``& _TRI_MASK``)."""
    b, _, f, h, w = setup.shape
    device = setup.area.device
    z = setup.screen[2]
    ok = setup.ok
    # Bounding box of the pixel centres inside the triangle's box, clamped to the image; floats
    # are clamped first so that a huge coordinate cannot overflow the integer conversion.
    big = float(max(w, h) + 1)
    low, high = torch.aminmax(setup.screen[:2], dim=1)  # (2, T) each
    lo = torch.ceil(low.clamp_(-1.0, big).sub_(0.5)).clamp_min_(0.0)
    last = torch.floor(high.clamp_(-1.0, big).sub_(0.5))
    count = torch.minimum(last, _viewport(h, w, lo.dtype, device)[2]).sub_(lo).add_(1)
    ok = ok & (count.amin(0) > 0)
    count = torch.where(ok, count, 0.0)  # culled triangles' boxes are never read, but index the side table

    # Each triangle's stencil test needs, over the pixel offsets ``(dx, dy)`` from its box's first
    # pixel centre: the box's right and bottom limits ``count - 0.5 - d`` (>= 0 inside the box,
    # which keeps a stencil larger than the box from reaching past it or wrapping into the next
    # row), and the planes ``c + a dx + b dy`` of the three barycentrics (all >= 0 inside, either
    # winding) and of z/w, which is affine in screen space too. One table holds them all, so that
    # a single gather sorts them.
    table = z.new_empty(14, z.shape[1])  # rows: 2 box limits, then (3 [a, b, c], 4 [l0, l1, l2, z])
    torch.sub(count, 0.5, out=table[:2])
    planes = table[2:].view(3, 4, -1)
    lam_a, lam_b = setup.lam_a, setup.lam_b
    planes[0, :3], planes[1, :3] = lam_a, lam_b
    torch.mul(lam_a, lo[0] + 0.5 - setup.xy_j[0], out=planes[2, :3]).add_(lam_b * (lo[1] + 0.5 - setup.xy_j[1]))
    torch.sum(planes[:, :3] * z, 1, out=planes[:, 3])
    table = table.float()
    start = lo[1].long() * w + lo[0].long()
    if b > 1:
        start += _batch_offsets(b, f, h * w, device)
    boxes = torch.stack([start, _triangle_index(b, f, device)])  # (2, T): first pixel, triangle index
    clip_z = bool((((setup.z_range.min < -1) | (setup.z_range.max > 1)) & ok).any())

    # Stencil classes: each box side rounds up to the next of 2, 3, 4, 6, 8, 12, ... pixels, so a
    # box fills more than half of its (rectangular) stencil; sparse classes are merged into larger
    # ones (:func:`_merge_stencils`). Sorting the triangles by class makes each class a slice of
    # the sorted tables (culled ones, class -1, first).
    side = _side_table(max(w, h), device).index_select(0, count.long().view(-1)).view(2, -1)  # (2, T)
    stencil_class = torch.where(ok, side[0] * _NUM_SIDES + side[1], -1)
    counts = torch.bincount(stencil_class + 1).tolist()  # counts[k + 1]: triangles of class k
    sizes = {_stencil_of(k): n for k, n in enumerate(counts[1:]) if n}
    merged = _merge_stencils(sizes)
    if any(target != stencil for stencil, target in merged.items()):
        remap = list(range(-1, len(counts) - 1))
        for stencil, target in merged.items():
            remap[_class_index(stencil) + 1] = _class_index(target)
        stencil_class = torch.tensor(remap, device=device).index_select(0, stencil_class + 1)
    order = torch.argsort(stencil_class)
    table = _columns(table, order)[:, None]  # triangles broadcast over a stencil
    limits, planes = table[:2], table[2:].view(3, 4, 1, -1)
    boxes = _columns(boxes, order)

    passes = {}  # stencil -> triangles, in the sorted order (by class index)
    for stencil, target in sorted(merged.items(), key=lambda item: _class_index(item[1])):
        passes[target] = passes.get(target, 0) + sizes[stencil]
    # Stencil positions past a box's end are misses, written past the image's last pixel.
    reach = max(((sy - 1) * w + sx for sx, sy in passes), default=0)
    buffer = torch.full((b * h * w + reach,), _MISS, dtype=torch.int64, device=device)
    first = counts[0]
    for stencil, n in passes.items():
        per_chunk = max(1, _MAX_CANDIDATES // (stencil[0] * stencil[1]))
        for chunk in range(first, first + n, per_chunk):
            last = min(chunk + per_chunk, first + n)
            _splat(buffer, limits[..., chunk:last], planes[..., chunk:last], boxes[:, chunk:last], stencil, w,
                   clip_z)
        first += n
    return buffer[:b * h * w]


def _merge_stencils(sizes: dict[tuple[int, int], int]) -> dict[tuple[int, int], tuple[int, int]]:
    """Which stencil each class's triangles are tested with: its own, or, for a sparse class, a
    larger one that runs anyway when that costs fewer extra candidates than a pass of its own.

    Args:
        sizes: triangles per stencil ``(Sx, Sy)``.

    Returns:
        ``{stencil: stencil it is tested with}`` for every key of ``sizes``.
    """
    target = {stencil: stencil for stencil in sizes}
    live = dict(sizes)
    for stencil in sorted(sizes, key=sizes.get):  # the sparsest first
        extra = {other: live[stencil] * (other[0] * other[1] - stencil[0] * stencil[1]) for other in live
                 if other != stencil and other[0] >= stencil[0] and other[1] >= stencil[1]}
        if extra and min(extra.values()) < _PASS_COST:
            into = min(extra, key=extra.get)
            live[into] += live.pop(stencil)
            for key, value in target.items():
                if value == stencil:
                    target[key] = into
    return target


def _batch_offsets(batch: int, num_triangles: int, image_pixels: int, device: torch.device) -> torch.Tensor:
    """``(batch * F,)`` flat index of each triangle's image's first pixel."""
    return (torch.arange(batch, device=device) * image_pixels).repeat_interleave(num_triangles)


def _triangle_index(batch: int, num_triangles: int, device: torch.device) -> torch.Tensor:
    """``(batch * F,)`` index of each triangle within its image (shared when ``batch`` is 1: do not modify)."""
    return _arange(num_triangles, device) if batch == 1 else torch.arange(num_triangles, device=device).repeat(batch)


@functools.lru_cache(maxsize=16)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    """``torch.arange(n)`` (shared: do not modify)."""
    return torch.arange(n, device=device)


# Stencil sides 2, 3, 4, 6, 8, 12, ...: side index i is 2^(i/2 + 1) for even i, 3 2^((i-1)/2) for odd i.
_NUM_SIDES = 64


def _side(index: int) -> int:
    """Stencil side length of a side index (see ``_NUM_SIDES``)."""
    return 2 << (index // 2) if index % 2 == 0 else 3 << (index // 2)


def _side_index(side: int) -> int:
    """The side index of a stencil side length (the inverse of :func:`_side`)."""
    odd = side % 3 == 0
    return 2 * (side // (3 if odd else 2)).bit_length() - (1 if odd else 2)


def _stencil_of(class_index: int) -> tuple[int, int]:
    """The stencil ``(Sx, Sy)`` of a class index (as ``_nearest_hits`` numbers them)."""
    return _side(class_index // _NUM_SIDES), _side(class_index % _NUM_SIDES)


def _class_index(stencil: tuple[int, int]) -> int:
    """The class index of a stencil ``(Sx, Sy)`` (the inverse of :func:`_stencil_of`)."""
    return _side_index(stencil[0]) * _NUM_SIDES + _side_index(stencil[1])


@functools.lru_cache(maxsize=8)
def _side_table(longest: int, device: torch.device) -> torch.Tensor:
    """``(longest + 1,)`` int64: the index of the smallest stencil side >= each box side ``0..longest``
    (sides below 2 get side 2; a box side never exceeds the image's). Shared: do not modify."""
    c = torch.arange(longest + 1, device=device, dtype=torch.float64).clamp_min(2)
    k = torch.log2(c).ceil_()  # c in (2^(k-1), 2^k]
    return (2 * k - 2).long() - (c <= 0.75 * torch.exp2(k)).long()


def _columns(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[:, index]`` for a 2-D table (a gather: much faster than advanced indexing on CPU)."""
    return torch.gather(table, 1, index[None].expand(table.shape[0], -1))


@functools.lru_cache(maxsize=64)
def _stencil(size: tuple[int, int], width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """An ``Sx x Sy`` stencil in an image ``width`` pixels wide: ``(Sx * Sy, 1)`` column and row
    offsets as float32, both stacked ``(2, Sx * Sy, 1)``, and flat pixel offsets as int64 (shared:
    do not modify)."""
    offsets = torch.arange(size[0] * size[1], device=device)[:, None]
    oy, ox = offsets // size[0], offsets % size[0]
    fxy = torch.stack([ox, oy]).float()
    return fxy[0], fxy[1], fxy, oy * width + ox


def _splat(buffer: torch.Tensor, limits: torch.Tensor, planes: torch.Tensor, boxes: torch.Tensor,
           stencil: tuple[int, int], width: int, clip_z: bool) -> None:
    """Depth-test ``K`` triangles over their pixel boxes, at most ``stencil = (Sx, Sy)``, into ``buffer``.

    ``limits`` ``(2, 1, K)``: box width and height less 0.5; ``planes`` ``(3 [a, b, c], 4, 1, K)``:
    the barycentric and depth planes (see :func:`_nearest_hits`); ``boxes`` ``(2, K)``: flat
    index of the box's first pixel and triangle index. ``buffer`` must extend past the last pixel
    by the stencil's reach.
    """
    # Rows (box x, box y, l0, l1, l2, z/w) over (6, Sx * Sy, K) in three operations: stencil
    # offsets along the middle axis and triangles along the last keep the inner loops long. Masks
    # stay float: on CPU a comparison into a float tensor, arithmetic and fmax cost a fraction of
    # bool masks and where.
    fx, fy, fxy, offsets = _stencil(stencil, width, planes.device)
    rows = planes.new_empty(6, fx.shape[0], planes.shape[-1])
    torch.sub(limits, fxy, out=rows[:2])
    a, b, c = planes.unbind(0)
    torch.addcmul(c, a, fx, out=rows[2:]).addcmul_(b, fy)
    inside = rows[:5].amin(0).ge_(-_INSIDE_EPS)  # 1.0 inside the triangle and the box, else 0.0 (also for NaN)
    z = rows[5]  # (S*S, K)
    if clip_z:
        inside.mul_(z.abs().le_(1.0))
    # Outside, z/w is raised to _MISS_Z (fmax also replaces NaN), so its key is a miss; inside, it
    # is within [-1, 1] and stays as it is.
    z = torch.fmax(z, inside.mul_(-2 * _MISS_Z).add_(_MISS_Z), out=z).clamp_max_(_MISS_Z)
    # Key: (z + 1) 2^29, i.e. z/w to 2^-29 (finer than float32 resolves it near 1), above the index.
    start, index = boxes.unbind(0)
    key = torch.add(index, z.add_(1.0).mul_(1 << 29).long(), alpha=1 << _TRI_BITS)
    buffer.scatter_reduce_(0, (start + offsets).view(-1), key.view(-1), "amin")


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
    """``(3, batch * F)`` rows of each triangle corner in a ``(batch * V, ...)`` flattened vertex table
    (for one image, cached per topology: do not modify)."""
    rows = cached_on(tri, ("corners",), lambda: tri.t().contiguous())
    if batch == 1:
        return rows
    offsets = (torch.arange(batch, device=tri.device) * num_vertices)[:, None]
    return (rows[:, None, :] + offsets).reshape(3, -1)


def corner_channel_index(tri: torch.Tensor, batch: int, num_vertices: int, channels: int) -> torch.Tensor:
    """``(C, 3, batch * F)`` flat indices of every corner's channels in a ``(batch * V * C)``
    channels-last vertex table, so that one 1-D ``index_select`` gathers a whole ``(C, 3, T)``
    per-corner table (for one image, cached per topology: do not modify)."""
    index = cached_on(tri, ("corner_channels", channels), lambda: (
        tri.t() * channels + torch.arange(channels, device=tri.device)[:, None, None]).contiguous())
    if batch == 1:
        return index
    offsets = (torch.arange(batch, device=tri.device) * (num_vertices * channels))[:, None]
    return (index[:, :, None, :] + offsets).reshape(channels, 3, -1)


def _pixel_centres(pixels: torch.Tensor, resolution: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """``(2, M)`` pixel-space ``(x, y)`` centres of flat pixel indices into one ``H x W`` image (a new tensor)."""
    h, w = resolution
    if h * w <= _CENTRE_TABLE_MAX:  # one gather from a cached table beats two integer divisions
        return _centre_table(h, w, pixels.device, dtype).index_select(1, pixels)
    return torch.stack([pixels % w, pixels // w]).to(dtype).add_(0.5)


@functools.lru_cache(maxsize=4)
def _centre_table(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(2, H * W)`` ``(x, y)`` centre of every pixel of an ``H x W`` image (shared: do not modify)."""
    y, x = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                          indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)]).add_(0.5)


class _RasterizeFunction(torch.autograd.Function):
    """Visibility plus perspective-correct barycentrics at the covered pixels, backward by hand.

    With corners in pixel coordinates ``s_i = (x_i, y_i) / w_i * (W, H) / 2 + (W, H) / 2`` and the
    offset ``d = p - s_2`` of a pixel centre ``p``, the screen barycentrics are ``l_0 = beta_0 . d``,
    ``l_1 = beta_1 . d`` (``beta_i = (-e_iy, e_ix) / A``, edges ``e_0 = s_2 - s_1``, ``e_1 = s_0 - s_2``,
    ``A = e_1 x e_0``) and ``l_2 = 1 - l_0 - l_1``; the perspective-correct ones are ``b_i ~ l_i / w_i``,
    i.e. ``u = l_0 r_0 / (l_0 r_0 + l_1 r_1 + l_2)`` with ``r_i = w_2 / w_i``, and
    ``z/w = z_2 + (z_0 - z_2) l_0 + (z_1 - z_2) l_1``. Working relative to ``s_2`` keeps float32
    accurate for small triangles. Each covered pixel reads one column of the per-triangle table
    with rows ``(s_2x, s_2y, beta_0x, beta_1x, beta_0y, beta_1y, r_0, r_1, z_2, z_0 - z_2, z_1 - z_2)``.

    Outputs: the dense raster, ``uv`` ``(M, 2)`` (a view of a ``(2, M)`` row table), and the
    non-differentiable covered pixels, their triangles and their images.
    """

    @staticmethod
    def forward(ctx, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
                visible: Fragments | None = None):
        b, v = pos.shape[:2]
        h, w = resolution
        f = tri.shape[0]
        ctx.set_materialize_grads(False)
        ctx.pos_shape = pos.shape
        if f == 0 or v == 0:
            ctx.empty = True
            empty = torch.zeros(0, dtype=torch.int64, device=pos.device)
            ctx.mark_non_differentiable(empty)
            return pos.new_zeros(b, h, w, 4), pos.new_zeros(0, 2), empty, empty, empty
        ctx.empty = False
        setup = _Setup(pos, tri, resolution)
        sw, screen = setup.safe_w, setup.screen
        table = torch.cat([screen[:2, 2], setup.lam_a[:2], setup.lam_b[:2], sw[2] / sw[:2], screen[2, 2:],
                           screen[2, :2] - screen[2, 2:]])
        # Columns of culled triangles are never read by a covered pixel, but must be finite.
        table = torch.nan_to_num_(table, nan=0.0, posinf=0.0, neginf=0.0)  # (11, T)

        # Only covered pixels are computed; the background stays 0.
        if visible is None:
            hits = _nearest_hits(setup)
            pixels = (hits < _MISS).nonzero().view(-1)
            ids = hits.index_select(0, pixels).bitwise_and_(_TRI_MASK)
            images = pixels // (h * w) if b > 1 else torch.zeros_like(pixels)
        else:
            pixels, ids, images = visible.pixels, visible.triangles, visible.images
        if b > 1:
            in_image, rows = pixels - images * (h * w), ids + images * f
        else:
            in_image, rows = pixels, ids
        t = table.index_select(1, rows)  # (11, M)
        d = _pixel_centres(in_image, (h, w), pos.dtype).sub_(t[:2])  # (2, M): p - s_2
        lam = torch.addcmul(t[2:4] * d[0], t[4:6], d[1])  # (2, M): l_0, l_1
        p = lam * t[6:8]  # l_i r_i
        inv = (p - lam).sum(0).add_(1.0).reciprocal_()  # 1 / (p_0 + p_1 + 1 - l_0 - l_1)
        values = pos.new_empty(4, pixels.shape[0])  # rows (u, v, z/w, id + 1)
        torch.mul(p, inv, out=values[:2])
        torch.addcmul(t[8], t[9], lam[0], out=values[2]).addcmul_(t[10], lam[1])
        torch.add(ids, 1, out=values[3])
        rast = pos.new_zeros(b * h * w * 4).scatter_(0, channel_slots(pixels, 4).view(-1), values.view(-1))
        ctx.save_for_backward(t, d, lam, inv, values, rows, pixels, table, setup.ndc, sw, setup.ex, setup.ey,
                              setup.inv_area, corner_index(tri, b, v))
        ctx.half = (0.5 * w, 0.5 * h)
        ctx.mark_non_differentiable(pixels, ids, images)
        return rast.view(b, h, w, 4), values[:2].t(), pixels, ids, images

    @staticmethod
    def backward(ctx, grad_rast: torch.Tensor | None, grad_uv: torch.Tensor | None, _pixels, _ids, _images):
        if ctx.empty or (grad_rast is None and grad_uv is None):
            return None, None, None, None
        (t, d, lam, inv, values, rows, pixels, table, ndc, sw, ex, ey, inv_area,
         corners) = ctx.saved_tensors
        # Gradients reach (u, v) through the compact fragments, the dense raster, or both; like
        # nvdiffrast, z/w and the id pass no gradient.
        grad = None if grad_uv is None else grad_uv.t()  # (2, M)
        if grad_rast is not None:
            dense = grad_rast.reshape(-1).index_select(0, channel_slots(pixels, 4, 2).view(-1)).view(2, -1)
            grad = dense if grad is None else grad + dense
        grad = grad.contiguous()
        # Per pixel: u = p_0 / s, v = p_1 / s, s = p_0 + p_1 + 1 - l_0 - l_1, p_i = l_i r_i.
        g_s = (grad * values[:2]).sum(0).mul_(inv).neg_()
        g_p = torch.addcmul(g_s, grad, inv)
        g_l = torch.mul(g_p, t[6:8]).sub_(g_s)
        grad_rows = grad.new_empty(8, grad.shape[1])  # per pixel, for table rows 0..7
        torch.sum(t[2:6].view(2, 2, -1) * g_l, 1, out=grad_rows[:2]).neg_()  # s_2 enters through d = p - s_2
        torch.mul(g_l, d[0], out=grad_rows[2:4])
        torch.mul(g_l, d[1], out=grad_rows[4:6])
        torch.mul(g_p, lam, out=grad_rows[6:8])
        g = grad.new_zeros(8, table.shape[1]).index_add_(1, rows, grad_rows)  # per triangle
        g_s2x, g_s2y, g_b0x, g_b1x, g_b0y, g_b1y, g_r0, g_r1 = g
        # beta_0 = (-e0y, e0x) / A, beta_1 = (-e1y, e1x) / A, A = e1y e0x - e1x e0y; e_0 is edge 0
        # (corner 1 -> 2), e_1 edge 1 (corner 2 -> 0).
        e0x, e0y, e1x, e1y = ex[0], ey[0], ex[1], ey[1]
        g_area = (g_b0x * e0y - g_b0y * e0x + g_b1x * e1y - g_b1y * e1x).mul_(inv_area * inv_area)
        g_e0x = torch.addcmul(g_b0y * inv_area, g_area, e1y)
        g_e0y = torch.addcmul(g_b0x * inv_area, g_area, e1x).neg_()
        g_e1x = torch.addcmul(g_b1y * inv_area, g_area, e0y, value=-1.0)
        g_e1y = torch.addcmul(g_area * e0x, g_b1x, inv_area, value=-1.0)
        # Per corner, rows (x, y, w): first d loss / d (screen x, screen y, w).
        g_corner = g.new_empty(3, 3, g.shape[1])
        for row, g_e0, g_e1, g_s2 in ((g_corner[0], g_e0x, g_e1x, g_s2x), (g_corner[1], g_e0y, g_e1y, g_s2y)):
            row[0] = g_e1
            torch.neg(g_e0, out=row[1])
            torch.sub(g_e0, g_e1, out=row[2]).add_(g_s2)
        g_w = g_corner[2]
        q = g[6:8] / sw[:2]  # r_i = w_2 / w_i: dr_i/dw_i = -r_i / w_i, dr_i/dw_2 = 1 / w_i
        torch.mul(q, table[6:8], out=g_w[:2]).neg_()
        torch.sum(q, 0, out=g_w[2])
        # s = ndc * half + half with ndc = (x, y) / w: ds/dx = half / w, ds/dw = -ndc half / w.
        half_w, half_h = ctx.half
        g_corner[0].mul_(half_w)
        g_corner[1].mul_(half_h)
        g_corner[:2].div_(sw)
        g_w.sub_((g_corner[:2] * ndc[:2]).sum(0))
        b, v = ctx.pos_shape[:2]
        grad_pos = g.new_zeros(4, b * v)  # (x, y, z, w) rows; z gets no gradient
        flat = corners.view(-1)
        grad_pos[:2].index_add_(1, flat, g_corner[:2].view(2, -1))
        grad_pos[3:].index_add_(1, flat, g_w.view(1, -1))
        return grad_pos.t().view(ctx.pos_shape), None, None, None
