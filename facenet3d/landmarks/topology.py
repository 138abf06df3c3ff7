"""Topology of the MediaPipe face mesh: triangles and region contours, from the wheel's edge sets.

mediapipe 0.10.14 does not ship ``canonical_face_model.obj`` (checked: its
``modules/face_geometry/data/`` holds only ``__init__.py``), but it ships the mesh's
tessellation as edges (``mp.solutions.face_mesh_connections.FACEMESH_TESSELATION``: 2,556
directed edges, 3 per triangle, i.e. each triangle ``(a, b, c)`` contributes ``a->b``,
``b->c``, ``c->a``). :func:`mesh_triangles` recovers the triangles from it: the 3-cliques of
the edge graph, minus the two "separating" 3-cycles that are not faces (their three edges
would each be shared by three triangles). The result is the 852 triangles of the face
surface with the eyes and the mouth left open (the OBJ's 898 triangles also close those
three holes: 14 + 14 + 18 triangles), a manifold disk with 3 holes (Euler characteristic
468 - 1322 + 852 = -2).

Region contours (face oval, eyes, brows, lips) come from the wheel's ``FACEMESH_*`` sets (copied
to ``data/mediapipe/face_mesh_connections.npz`` by :mod:`facenet3d.landmarks.convert_mediapipe`, so
no mediapipe install is needed);
the nostril rings are not among them and are listed here (vertices around each nostril
opening on the underside of the nose, checked on the mean face).
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import numpy as np

#: Vertices of the face-mesh surface; 468..477 are the iris points (no triangles).
NUM_MESH_VERTICES = 468

#: Iris landmarks (centre first, then 4 on the iris rim) of the refined mesh.
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)

# The mesh has no nostril holes; these polygons outline each nostril opening on the underside
# of the nose (alar rim 79/166, tip side 238, columella 242, sill 99/60), read off the mean
# face seen from below. Subject's right = image left; the left one is its mirror image.
RIGHT_NOSTRIL = (79, 238, 242, 99, 60, 166)
LEFT_NOSTRIL = (309, 458, 462, 328, 290, 392)


@lru_cache(maxsize=1)
def _connection_sets() -> dict[str, np.ndarray]:
    from facenet3d.landmarks.mediapipe_onnx import MODEL_DIR

    with np.load(MODEL_DIR / "face_mesh_connections.npz") as data:
        return {k: data[k] for k in data.files}


def _connections(name: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in _connection_sets()[name]]


@lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """``(852, 3)`` int64 triangles of the 468-vertex MediaPipe face mesh.

    Wound counter-clockwise seen from the front in model space (+y up, +z towards the
    viewer), i.e. clockwise in image coordinates (+y down) for a frontal face.
    """
    directed = set(_connections("FACEMESH_TESSELATION"))
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in directed:
        adj[a].add(b)
        adj[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in directed for c in adj[a] & adj[b]}
    use: dict[frozenset, int] = defaultdict(int)
    for t in cliques:
        for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            use[frozenset(e)] += 1
    faces = [t for t in cliques
             if not all(use[frozenset(e)] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    tris = _orient_consistently(np.array(sorted(faces), dtype=np.int64))
    # The wheel lists each boundary edge once, in the direction of the wanted winding
    # (counter-clockwise from the front); interior edges come in both directions.
    own = {(int(t[k]), int(t[(k + 1) % 3])) for t in tris for k in range(3)}
    boundary = [e for e in own if (e[1], e[0]) not in own]
    if sum(e in directed for e in boundary) < len(boundary) / 2:
        tris = tris[:, [0, 2, 1]]
    tris.setflags(write=False)
    return tris


def _orient_consistently(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so that neighbours agree (each shared edge used once in each direction)."""
    edge_tris: dict[frozenset, list[int]] = defaultdict(list)
    for i, t in enumerate(tris):
        for k in range(3):
            edge_tris[frozenset((int(t[k]), int(t[(k + 1) % 3])))].append(i)
    tris = tris.copy()
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            i = stack.pop()
            t = tris[i]
            for k in range(3):
                a, b = int(t[k]), int(t[(k + 1) % 3])
                for j in edge_tris[frozenset((a, b))]:
                    if done[j]:
                        continue
                    u = tris[j]
                    same_dir = any(int(u[m]) == a and int(u[(m + 1) % 3]) == b for m in range(3))
                    if same_dir:
                        tris[j] = u[[0, 2, 1]]
                    done[j] = True
                    stack.append(j)
    return tris


def edge_loops(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Chain edges into vertex paths: closed loops (first vertex not repeated) or open chains.

    Args:
        edges: undirected vertex-index pairs whose components are simple paths or cycles.

    Returns:
        One vertex list per connected component.
    """
    adj: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen: set[int] = set()
    out = []
    for start in sorted(adj, key=lambda v: (len(adj[v]) != 1, v)):  # open chains from an end
        if start in seen:
            continue
        path, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            path.append(cur)
            seen.add(cur)
        out.append(path)
    return out


def _band(edges: list[tuple[int, int]]) -> tuple[int, ...]:
    """Polygon between two open chains that start at the same end (a brow: upper + lower line).

    The wheel lists each brow as two directed chains, both running from the outer to the
    inner end; the polygon is one chain followed by the other reversed.
    """
    starts = {a for a, _ in edges} - {b for _, b in edges}
    nxt = dict(edges)
    chains = []
    for s in sorted(starts):
        chain = [s]
        while chain[-1] in nxt:
            chain.append(nxt[chain[-1]])
        chains.append(chain)
    if len(chains) != 2:
        raise RuntimeError(f"expected two chains, got {len(chains)}")
    return tuple(chains[0] + chains[1][::-1])


@lru_cache(maxsize=1)
def region_polygons() -> dict[str, tuple[int, ...]]:
    """Closed vertex polygons of the face regions used for masks.

    Returns:
        ``{"face_oval", "right_eye", "left_eye", "right_brow", "left_brow", "mouth_interior",
        "lips_outer", "right_nostril", "left_nostril"}`` -> vertex indices in order around it.
    """
    polys: dict[str, tuple[int, ...]] = {}
    for name, key in (("face_oval", "FACEMESH_FACE_OVAL"), ("right_eye", "FACEMESH_RIGHT_EYE"),
                      ("left_eye", "FACEMESH_LEFT_EYE")):
        (loop,) = edge_loops(_connections(key))
        polys[name] = tuple(loop)
    polys["right_brow"] = _band(_connections("FACEMESH_RIGHT_EYEBROW"))
    polys["left_brow"] = _band(_connections("FACEMESH_LEFT_EYEBROW"))
    lips = edge_loops(_connections("FACEMESH_LIPS"))
    inner = next(loop for loop in lips if 13 in loop)  # 13: middle of the upper lip's inner edge
    outer = next(loop for loop in lips if 0 in loop)  # 0: middle of the upper lip's outer edge
    polys["mouth_interior"], polys["lips_outer"] = tuple(inner), tuple(outer)
    polys["right_nostril"], polys["left_nostril"] = RIGHT_NOSTRIL, LEFT_NOSTRIL
    return polys
