"""Analytic antialiasing of silhouette edges (nvdiffrast's ``antialias``), which gives the image
gradients with respect to vertex positions where coverage changes.

The method follows Laine et al., "Modular primitives for high-performance differentiable
rendering" (2020). For every pair of horizontally or vertically adjacent pixels whose triangle
ids differ, the triangle of the nearer pixel (or the only one) is examined: if the edge through
which the segment between the two pixel centres leaves it is a *silhouette* edge, the colours are
blended by where the edge crosses the segment, as a box filter across the edge would. With the
crossing at ``t`` (0 at the covered pixel's centre, 1 at the other's): if ``t > 0.5`` the other pixel
takes ``(t - 0.5)`` of the covered pixel's colour, else the covered pixel takes ``(0.5 - t)`` of the
other's. ``t`` is a differentiable function of the triangle's vertices, hence the gradients.

An edge is a silhouette edge when the triangle across it folds back over it in screen space
(its opposite vertex lies on the same side of the edge as this triangle's) or does not exist;
the neighbours come from :func:`antialias_topology`. As in nvdiffrast, an edge is handled by the
horizontal pair when it is closer to vertical than to horizontal, and by the vertical pair
otherwise, so that no edge is blended twice. Triangles thinner than a pixel that cover no pixel
centre are invisible here, as they are to nvdiffrast.
"""

from __future__ import annotations

import torch

from facenet3d.errors import RenderError
from facenet3d.render import nvdiffrast_backend
from facenet3d.render.backend import resolve_backend
from facenet3d.render.rasterize import check_rast, rast_triangles

# Crossings this far outside the segment (in units of the pixel spacing) still count, for
# rounding; nvdiffrast uses the same tolerance.
_CROSSING_EPS = 1.0 / 16.0


def antialias_topology(tri: torch.Tensor) -> torch.Tensor:
    """The vertex across each triangle edge, for silhouette tests.

    Args:
        tri: ``(F, 3)`` int vertex indices.

    Returns:
        ``(F, 3)`` int64: for edge ``i`` (opposite corner ``i``), the corner of the neighbouring
        triangle that is not on the edge, or the triangle's own corner ``i`` on a boundary edge
        (which makes the edge a silhouette). Compute it once per mesh topology.
    """
    tri = tri.long()
    f = tri.shape[0]
    if f == 0:
        return tri.clone()
    a, b = tri.roll(-1, 1), tri.roll(-2, 1)  # edge i runs from corner i + 1 to corner i + 2
    lo, hi = torch.minimum(a, b).reshape(-1), torch.maximum(a, b).reshape(-1)
    key = lo * (int(tri.max()) + 1) + hi
    order = torch.argsort(key)
    sorted_key = key[order]
    same_next = torch.zeros_like(sorted_key, dtype=torch.bool)
    same_next[:-1] = sorted_key[:-1] == sorted_key[1:]
    same_prev = torch.zeros_like(same_next)
    same_prev[1:] = same_next[:-1]
    position = torch.arange(order.numel(), device=tri.device)
    partner_pos = torch.where(same_next, position + 1, torch.where(same_prev, position - 1, position))
    partner = torch.empty_like(order)
    partner[order] = order[partner_pos]  # half-edge -> its twin (itself on a boundary)
    return tri.reshape(-1)[partner].view(f, 3)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """Blend colours across silhouette edges.

    Args:
        color: ``(B, H, W, C)`` image to antialias (shaded, composited over the background).
        rast: ``(B, H, W, 4)`` from :func:`~facenet3d.render.rasterize` with the same ``pos`` and ``tri``.
        pos: ``(B, V, 4)`` clip-space positions.
        tri: ``(F, 3)`` int triangles.
        topology: ``antialias_topology(tri)``, to reuse across calls (computed when None).
        backend: see :func:`~facenet3d.render.rasterize` (nvdiffrast builds its own topology).

    Returns:
        ``(B, H, W, C)`` differentiable in ``color`` and ``pos``.
    """
    check_rast(rast)
    if color.ndim != 4 or color.shape[:3] != rast.shape[:3]:
        raise RenderError(f"color must be (B, H, W, C) matching rast {tuple(rast.shape[:3])}, got "
                          f"{tuple(color.shape)}")
    if resolve_backend(backend, color, rast, pos) == "nvdiffrast":
        return nvdiffrast_backend.antialias(color, rast, pos, tri)
    tri = tri.to(device=pos.device, dtype=torch.int64)
    if topology is None:
        topology = antialias_topology(tri)
    b, h, w, c = color.shape
    f = tri.shape[0]
    ids = rast_triangles(rast).view(-1)
    depth = rast[..., 2].detach().reshape(-1)
    silhouette = _silhouette_edges(pos, tri, topology)  # (B * F, 3)
    out = color.reshape(-1, c)
    pixel = torch.arange(b * h * w, device=color.device).view(b, h, w)
    for vertical in (False, True):
        first, second = (pixel[:, :-1, :], pixel[:, 1:, :]) if vertical else (pixel[:, :, :-1], pixel[:, :, 1:])
        first, second = first.reshape(-1), second.reshape(-1)
        differ = (ids[first] != ids[second]).nonzero().view(-1)
        first, second = first[differ], second[differ]
        t_first, t_second = ids[first], ids[second]
        # The nearer triangle, or the only one (nvdiffrast's rule); only pairs whose triangle has a
        # silhouette edge can need blending, which leaves few pairs of a mesh's interior.
        use_second = (t_first < 0) | ((t_second >= 0) & ~(depth[first] < depth[second]))
        near, far = torch.where(use_second, second, first), torch.where(use_second, first, second)
        rows = torch.where(use_second, t_second, t_first) + near // (h * w) * f
        candidates = silhouette[rows].any(1).nonzero().view(-1)
        if candidates.numel() == 0:
            continue
        delta_index, delta = _edge_blend(out, near[candidates], far[candidates], rows[candidates], pos, tri,
                                         silhouette, (h, w), vertical)
        out = out.index_add(0, delta_index, delta)
    return out.view(b, h, w, c)


@torch.no_grad()
def _silhouette_edges(pos: torch.Tensor, tri: torch.Tensor, topology: torch.Tensor) -> torch.Tensor:
    """``(B * F, 3)`` bool: edge ``i`` of each triangle is a silhouette edge in screen space.

    It is when the vertex across the edge lies on the same side of it as the triangle's own
    third vertex (the neighbour folds back), or there is no neighbour (``topology`` then names the
    triangle's own vertex, which makes the two areas equal).
    """
    xy = pos[..., :2] / torch.where(pos[..., 3:] > 0, pos[..., 3:], 1.0)  # NDC: signs as in pixels
    corners, wings = xy[:, tri], xy[:, topology]  # (B, F, 3, 2)
    vj, vk = corners.roll(-1, 2), corners.roll(-2, 2)
    area = _cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
    wing_area = _cross(vj - wings, vk - wings)
    return ((wing_area > 0) == (area > 0)[..., None]).reshape(-1, 3)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _edge_blend(color: torch.Tensor, near: torch.Tensor, far: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
                tri: torch.Tensor, silhouette: torch.Tensor, resolution: tuple[int, int], vertical: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour changes for ``K`` adjacent pixel pairs: ``near`` covered by triangle row ``rows``
    (``image * F + triangle``), ``far`` the other pixel (flat pixel indices)."""
    h, w = resolution
    v = pos.shape[1]
    f = tri.shape[0]
    vertex = tri[rows % f] + (rows // f * v)[:, None]  # (K, 3) rows of the flattened (B * V) positions
    p = pos.reshape(-1, 4)[vertex]
    corners = (p[..., :2] / p[..., 3:4] + 1) * p.new_tensor([w / 2.0, h / 2.0])  # (K, 3, 2) pixels

    def centre(index: torch.Tensor) -> torch.Tensor:  # pixel centres, in pixels
        rem = index % (h * w)
        return torch.stack([(rem % w).to(pos.dtype) + 0.5, (rem // w).to(pos.dtype) + 0.5], -1)

    c_near, c_far = centre(near), centre(far)
    vj, vk = corners.roll(-1, 1), corners.roll(-2, 1)  # edge i: corner i + 1 -> corner i + 2
    edge = vk - vj
    area = _cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # (K,)
    safe_area = torch.where(area != 0, area, torch.ones_like(area))[:, None]
    lam_near = _cross(edge, c_near[:, None] - vj) / safe_area  # (K, 3) barycentrics at both centres
    lam_far = _cross(edge, c_far[:, None] - vj) / safe_area
    leaving = (lam_far < 0) & (area != 0)[:, None]
    denom = torch.where(leaving, lam_near - lam_far, torch.ones_like(lam_far))
    crossing = torch.where(leaving, lam_near / denom, torch.full_like(lam_far, float("inf")))
    t, edge_index = crossing.min(1)  # where the segment leaves the triangle, and through which edge
    with torch.no_grad():
        e = edge.detach().gather(1, edge_index[:, None, None].expand(-1, 1, 2)).squeeze(1)
        steep = e[:, 1].abs() >= e[:, 0].abs() if not vertical else e[:, 0].abs() >= e[:, 1].abs()
        on_silhouette = silhouette[rows].gather(1, edge_index[:, None]).squeeze(1)
        valid = torch.isfinite(t) & steep & on_silhouette & (t > -_CROSSING_EPS) & (t < 1 + _CROSSING_EPS)
    keep = valid.nonzero().squeeze(1)
    t, near, far = t[keep].clamp(0.0, 1.0), near[keep], far[keep]
    color_near, color_far = color[near], color[far]
    # Covered pixel blends towards the other if the edge crosses before the midpoint, else the
    # other pixel takes some of the covered pixel's colour.
    alpha_near = (0.5 - t).clamp_min(0.0)[:, None]
    alpha_far = (t - 0.5).clamp_min(0.0)[:, None]
    delta = torch.cat([(color_far - color_near) * alpha_near, (color_near - color_far) * alpha_far])
    return torch.cat([near, far]), delta
