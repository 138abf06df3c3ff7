"""Rasterising a mesh in its UV layout: which triangle covers each texel of a map."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facenet3d.render.interpolate import interpolate
from facenet3d.render.rasterize import rasterize


@dataclass
class UVRaster:
    """The ``(T, T)`` texels of a UV map and the mesh triangles covering them.

    Attributes:
        rast: ``(1, T, T, 4)`` :func:`~facenet3d.render.rasterize` output in UV space (triangle
            ids index ``uv_triangles``); row 0 is ``v = 1`` (image convention).
        covered: ``(T, T)`` bool, texels inside a UV chart.
        uv_triangles: ``(F, 3)`` the indices the raster refers to.
    """

    rast: torch.Tensor
    covered: torch.Tensor
    uv_triangles: torch.Tensor

    @classmethod
    def build(cls, uvs: torch.Tensor, uv_triangles: torch.Tensor, size: int) -> UVRaster:
        """Rasterise ``uvs (T, 2)`` (OBJ convention, v up) with ``uv_triangles (F, 3)`` at ``size``."""
        uv = torch.as_tensor(uvs, dtype=torch.float32)
        pos = torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1], torch.zeros_like(uv[:, 0]),
                           torch.ones_like(uv[:, 0])], -1)[None]
        tri = torch.as_tensor(uv_triangles, dtype=torch.int64)
        rast = rasterize(pos, tri, (size, size))
        return cls(rast=rast, covered=rast[0, ..., 3] > 0, uv_triangles=tri)

    def sample_vertices(self, attributes: torch.Tensor) -> torch.Tensor:
        """Interpolate per-UV-vertex attributes ``(B, T_uv, C)`` to every texel: ``(B, T, T, C)``
        (zero outside the charts)."""
        rast = self.rast.expand(attributes.shape[0], -1, -1, -1)
        return interpolate(attributes, rast, self.uv_triangles)

    def sample_mesh_vertices(self, attributes: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        """Interpolate per-*mesh*-vertex attributes ``(B, V, C)`` to every texel: ``(B, T, T, C)``.

        ``triangles (F, 3)`` are the mesh triangles matching ``uv_triangles`` row by row; a UV
        vertex takes the attributes of the mesh vertex it belongs to (seams split a mesh vertex
        into several UV vertices with equal values).
        """
        triangles = torch.as_tensor(triangles, dtype=torch.int64, device=attributes.device)
        uv_tri = self.uv_triangles.to(attributes.device)
        num_uv = int(uv_tri.max()) + 1
        per_uv = attributes.new_zeros(attributes.shape[0], num_uv, attributes.shape[2])
        per_uv[:, uv_tri.reshape(-1)] = attributes[:, triangles.reshape(-1)]
        return self.sample_vertices(per_uv)

