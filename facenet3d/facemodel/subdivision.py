"""Linear, interpolating mesh subdivision.

Each level splits every triangle into four. Original vertices keep their positions (so
landmark correspondences on the coarse mesh stay exact) and are numbered first; each new
edge vertex is Loop's edge stencil ``3/8 (a + b) + 1/8 (c + d)`` of the edge ends ``a, b``
and the two opposite vertices ``c, d`` (the midpoint on a boundary edge). The result is a
sparse matrix ``U`` with ``fine = U @ coarse``: applied to a mean shape and to every basis
vector alike, so a morphable model stays exactly linear on the finer mesh.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def subdivision_operator(triangles: np.ndarray, num_vertices: int, levels: int = 1
                         ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Upsampling operator of ``levels`` subdivision steps.

    Args:
        triangles: ``(F, 3)`` int triangles of the coarse mesh.
        num_vertices: ``V``, the coarse vertex count.
        levels: number of 1-to-4 splits.

    Returns:
        ``(U, fine_triangles)``: ``U`` a ``(V', V)`` CSR matrix whose rows sum to one, the first
        ``V`` rows being the identity; ``fine_triangles`` ``(4**levels F, 3)`` with the
        coarse winding.

    Example:
        >>> U, tris = subdivision_operator(np.array([[0, 1, 2]]), 3)
        >>> U.shape, tris.shape
        ((6, 3), (4, 3))
    """
    op = sp.identity(num_vertices, format="csr")
    tris = np.asarray(triangles, dtype=np.int64)
    n = num_vertices
    for _ in range(levels):
        step, tris = _one_level(tris, n)
        op = (step @ op).tocsr()
        n = step.shape[0]
    return op, tris


def _one_level(tris: np.ndarray, n: int) -> tuple[sp.csr_matrix, np.ndarray]:
    # Directed half-edges (a -> b) with the opposite vertex of their triangle.
    a = tris.reshape(-1)
    b = tris[:, [1, 2, 0]].reshape(-1)
    opp = tris[:, [2, 0, 1]].reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * n + hi
    uniq, edge_of_half = np.unique(key, return_inverse=True)
    e = len(uniq)
    e_lo, e_hi = uniq // n, uniq % n
    count = np.bincount(edge_of_half, minlength=e)
    interior = count[edge_of_half] == 2

    rows = [np.arange(n), n + np.arange(e), n + np.arange(e)]
    cols = [np.arange(n), e_lo, e_hi]
    vals = [np.ones(n), np.where(count == 2, 3 / 8, 1 / 2), np.where(count == 2, 3 / 8, 1 / 2)]
    # Each interior edge has two half-edges, each contributing its opposite vertex at 1/8.
    rows.append(n + edge_of_half[interior])
    cols.append(opp[interior])
    vals.append(np.full(interior.sum(), 1 / 8))
    step = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n + e, n))

    mid = (n + edge_of_half).reshape(-1, 3)  # per triangle: vertices on edges ab, bc, ca
    v0, v1, v2 = tris.T
    m01, m12, m20 = mid.T
    fine = np.concatenate([
        np.stack([v0, m01, m20], 1),
        np.stack([m01, v1, m12], 1),
        np.stack([m20, m12, v2], 1),
        np.stack([m01, m12, m20], 1),
    ])
    return step, fine
