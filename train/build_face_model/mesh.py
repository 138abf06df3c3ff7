"""The render mesh of the default face model: the MediaPipe topology subdivided twice.

The eye and mouth openings of the MediaPipe mesh are closed (fans around their centroids), so
the exported face has no holes. Closing and subdivision are linear operators (see
:mod:`facenet3d.facemodel.subdivision`), so the mean, every identity and expression mode and
the UV coordinates are all mapped with the same matrix and the model stays linear. The 468
MediaPipe vertices keep their indices and positions, so the 468 dense landmarks and the
iBUG-68 subset are exact vertices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from facenet3d.facemodel.subdivision import subdivision_operator
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
from facenet3d.landmarks.mean_face import cylindrical_uvs
from facenet3d.landmarks.topology import NUM_MESH_VERTICES, mesh_triangles, region_polygons


@dataclass
class RenderMesh:
    """Topology of the render mesh and its relation to the MediaPipe mesh."""

    upsample: sp.csr_matrix  # (V, 468)
    triangles: np.ndarray  # (F, 3)
    uvs: np.ndarray  # (V, 2), v up
    regions: dict[str, np.ndarray]  # name -> (V,) bool
    landmarks68: np.ndarray  # (68,)
    landmarks_mediapipe: np.ndarray  # (468,)

    @property
    def num_vertices(self) -> int:
        return self.upsample.shape[0]

    def apply(self, coarse: np.ndarray) -> np.ndarray:
        """``(..., 468, 3)`` -> ``(..., V, 3)``."""
        lead = coarse.shape[:-2]
        flat = coarse.reshape(-1, NUM_MESH_VERTICES, 3).transpose(1, 0, 2).reshape(NUM_MESH_VERTICES, -1)
        fine = self.upsample @ flat
        return fine.reshape(self.num_vertices, -1, 3).transpose(1, 0, 2).reshape(*lead, self.num_vertices, 3)


def close_holes(triangles: np.ndarray, num_vertices: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Close every boundary loop but the outer one (the eyes and the mouth of the MediaPipe
    mesh) with a fan around a new vertex at the loop's centroid.

    The new vertices are averages of existing ones, so closing is linear too.

    Returns:
        ``(C, triangles')``: ``C`` ``(V + holes, V)`` with the identity on top;
        ``triangles'`` with the fans appended, wound like their neighbours.
    """
    directed = {(int(t[k]), int(t[(k + 1) % 3])) for t in triangles for k in range(3)}
    boundary = {a: b for a, b in directed if (b, a) not in directed}  # a -> b along the border
    loops, seen = [], set()
    for start in sorted(boundary):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        while boundary[loop[-1]] != start:
            loop.append(boundary[loop[-1]])
            seen.add(loop[-1])
        loops.append(loop)
    loops.sort(key=len)
    holes = loops[:-1]  # the longest loop is the outer border of the face
    rows, cols, vals, fans = [np.arange(num_vertices)], [np.arange(num_vertices)], [np.ones(num_vertices)], []
    for h, loop in enumerate(holes):
        centre = num_vertices + h
        rows.append(np.full(len(loop), centre))
        cols.append(np.asarray(loop))
        vals.append(np.full(len(loop), 1.0 / len(loop)))
        # The border edge a -> b belongs to a triangle; the fan uses it as b -> a.
        fans += [(loop[(i + 1) % len(loop)], loop[i], centre) for i in range(len(loop))]
    c = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(num_vertices + len(holes), num_vertices))
    return c, np.concatenate([triangles, np.asarray(fans, dtype=np.int64)])


def coarse_regions() -> dict[str, np.ndarray]:
    """``(468,)`` bool masks of the MediaPipe vertices on each region's outline or inside it."""
    polys = region_polygons()

    def mask(*names: str) -> np.ndarray:
        m = np.zeros(NUM_MESH_VERTICES, bool)
        for n in names:
            m[list(polys[n])] = True
        return m

    eyes = mask("right_eye", "left_eye")
    brows = mask("right_brow", "left_brow")
    lips = mask("lips_outer", "mouth_interior")
    nostrils = mask("right_nostril", "left_nostril")
    return {
        "face": np.ones(NUM_MESH_VERTICES, bool),
        "eyes": eyes,
        "brows": brows,
        "mouth": lips,
        "nostrils": nostrils,
        # Skin for photometric fitting: no eyes, brows, lip margins or nostrils.
        "skin": ~(eyes | brows | mask("mouth_interior") | nostrils),
    }


def build_render_mesh(coarse_mean: np.ndarray, levels: int = 2) -> RenderMesh:
    """Subdivide the MediaPipe topology and lay out its UVs.

    Args:
        coarse_mean: ``(468, 3)`` mm, the model's mean shape on the MediaPipe vertices
            (UVs are a cylindrical unrolling of it).
        levels: subdivision levels (2 gives 6,990 vertices and 13,632 triangles).
    """
    closing, closed = close_holes(mesh_triangles(), NUM_MESH_VERTICES)
    sub, tris = subdivision_operator(closed, closing.shape[0], levels)
    up = (sub @ closing).tocsr()
    uv = sub @ cylindrical_uvs(closing @ coarse_mean).astype(np.float64)
    regions = {}
    for name, m in coarse_regions().items():
        # A fine vertex belongs to a region when most of its weight comes from it.
        regions[name] = np.asarray(up @ m.astype(np.float64)).reshape(-1) > 0.5
    return RenderMesh(
        upsample=up.tocsr(),
        triangles=tris,
        uvs=uv.astype(np.float32),
        regions=regions,
        landmarks68=IBUG68_FROM_MEDIAPIPE.astype(np.int64),
        landmarks_mediapipe=np.arange(NUM_MESH_VERTICES, dtype=np.int64),
    )
