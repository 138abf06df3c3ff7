"""Wavefront OBJ reading for face-model loaders: a fast vertex reader and a mesh reader.

Morphable models shipped as OBJ files (ICT-FaceKit: 160 files of 26,719 vertices) are
mostly ``v`` lines, so reading them line by line in Python dominates load time. The vertex
reader finds the block of ``v`` lines and hands it to numpy's C parser in one call; the
mesh reader (faces, texture coordinates) is only needed once per model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError


@dataclass
class ObjMesh:
    """A triangulated OBJ mesh, indices 0-based.

    Attributes:
        vertices: ``(V, 3)`` float64 positions, in the file's units.
        triangles: ``(F, 3)`` int64 vertex indices, winding as in the file.
        uvs: ``(T, 2)`` float64 texture coordinates (origin bottom-left), or None.
        uv_triangles: ``(F, 3)`` int64 indices into ``uvs``, or None when a face lacks them.
        polygon_of_triangle: ``(F,)`` int64 index of the OBJ face each triangle came from.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray | None
    uv_triangles: np.ndarray | None
    polygon_of_triangle: np.ndarray


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise FaceModelFormatError(path, "file not found") from e
    except OSError as e:
        raise FaceModelFormatError(path, f"cannot read ({e})") from e


def _records(data: bytes, tag: bytes) -> bytes:
    """The lines of ``data`` starting with ``tag`` (e.g. ``b"v "``), joined by newlines.

    Fast path: OBJ writers put all records of one kind in one contiguous block, which is
    sliced out without splitting the file into lines.
    """
    if data.startswith(tag):
        first = 0
    else:
        first = data.find(b"\n" + tag) + 1
        if first == 0:
            return b""
    last_line = max(data.rfind(b"\n" + tag) + 1, first)
    end = data.find(b"\n", last_line)
    block = data[first:] if end < 0 else data[first:end]
    if block.count(b"\n") == block.count(b"\n" + tag):
        return block
    # Records interleaved with other lines: filter them (slower, still correct).
    return b"\n".join(line for line in data.splitlines() if line.startswith(tag))


def _parse_floats(block: bytes, columns: int, path: Path, what: str) -> np.ndarray:
    """Parse ``tag x y [z ...]`` lines into an ``(N, columns)`` float64 array."""
    if not block:
        return np.zeros((0, columns))
    try:
        out = np.loadtxt(io.BytesIO(block.replace(b"\r", b"")), usecols=range(1, columns + 1),
                         dtype=np.float64, ndmin=2, comments="#")
    except ValueError as e:
        raise FaceModelFormatError(path, f"malformed {what} line ({e})") from e
    return out


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The ``(V, 3)`` float64 vertex positions of an OBJ file (extra columns such as colours ignored).

    Raises:
        FaceModelFormatError: missing file, no vertices, or a malformed ``v`` line.
    """
    path = Path(path)
    vertices = _parse_floats(_records(_read_bytes(path), b"v "), 3, path, "vertex")
    if len(vertices) == 0:
        raise FaceModelFormatError(path, "no vertices ('v' lines): not an OBJ mesh")
    return vertices


def _parse_faces(block: bytes, path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Corners of all faces: 1-based (or negative) vertex and texture indices, and polygon sizes.

    Returns:
        ``corner_vertex`` ``(C,)``, ``corner_uv`` ``(C,)`` or None when a face lacks texture
        indices, ``sizes`` ``(P,)`` corners per polygon.
    """
    vertex: list[int] = []
    uv: list[int] | None = []
    sizes: list[int] = []
    for line in block.split(b"\n"):
        corners = line.split()[1:]
        if len(corners) < 3:
            raise FaceModelFormatError(path, f"face with fewer than 3 corners: {line[:80]!r}")
        try:
            parts = [c.split(b"/") for c in corners]
            vertex.extend(int(p[0]) for p in parts)
            if uv is not None:
                if all(len(p) > 1 and p[1] for p in parts):
                    uv.extend(int(p[1]) for p in parts)
                else:
                    uv = None  # one face without UVs: the mesh has no usable UV layout
        except ValueError as e:
            raise FaceModelFormatError(path, f"malformed face line {line[:80]!r}") from e
        sizes.append(len(corners))
    return (np.asarray(vertex, dtype=np.int64), None if uv is None else np.asarray(uv, dtype=np.int64),
            np.asarray(sizes, dtype=np.int64))


def _zero_based(index: np.ndarray, count: int, path: Path, what: str) -> np.ndarray:
    # OBJ indices are 1-based; negative ones count back from the end of the list (all
    # records precede the faces in the meshes read here).
    out = np.where(index < 0, index + count, index - 1)
    if out.size and (out.min() < 0 or out.max() >= count):
        raise FaceModelFormatError(path, f"face refers to {what} outside 1..{count}")
    return out


def triangulate(corner_vertex: np.ndarray, sizes: np.ndarray,
                vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split polygons into triangles that keep the polygon's winding and facing.

    A polygon ``(c0, c1, ..., cn-1)`` is fanned from a pivot corner ``s`` into
    ``(cs, cs+1, cs+2), (cs, cs+2, cs+3), ...``; the cyclic order, hence the winding, is kept.
    The pivot is the first corner whose fan has every triangle facing the same side as the
    polygon's (Newell) normal; for a convex quad that is corner 0, for a concave one the
    reflex corner, which a fixed fan would split into a flipped triangle.

    Args:
        corner_vertex: ``(C,)`` 0-based vertex index of every corner, polygons one after another.
        sizes: ``(P,)`` number of corners of each polygon.
        vertices: ``(V, 3)`` positions.

    Returns:
        ``(F, 3)`` indices into the *corner* array (so texture indices follow the same split)
        and ``(F,)`` the polygon of each triangle, in polygon order.
    """
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tri_counts = sizes - 2
    tri_starts = np.concatenate([[0], np.cumsum(tri_counts)[:-1]])
    out = np.empty((int(tri_counts.sum()), 3), dtype=np.int64)
    source = np.repeat(np.arange(len(sizes)), tri_counts)
    for n in np.unique(sizes):
        sel = np.nonzero(sizes == n)[0]
        corners = starts[sel, None] + np.arange(n)  # (m, n) corner ids
        fan = np.stack([np.zeros(n - 2, dtype=np.int64), np.arange(1, n - 1), np.arange(2, n)], axis=1)
        pivot = np.zeros(len(sel), dtype=np.int64)
        if n > 3:
            pos = vertices[corner_vertex[corners]]  # (m, n, 3)
            normal = np.cross(pos, np.roll(pos, -1, axis=1)).sum(axis=1)
            found = np.zeros(len(sel), dtype=bool)
            for s in range(n):
                p = pos[:, (s + fan) % n]  # (m, n - 2, 3, 3)
                tri_normal = np.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0])
                facing = np.einsum("mkc,mc->mk", tri_normal, normal)
                good = (facing > 0).all(axis=1) & ~found
                pivot[good] = s
                found |= good
        local = (pivot[:, None, None] + fan[None]) % n  # (m, n - 2, 3)
        rows = tri_starts[sel, None] + np.arange(n - 2)
        out[rows] = corners[np.arange(len(sel))[:, None, None], local]
    return out, source


def read_obj_mesh(path: str | Path) -> ObjMesh:
    """Read vertices, texture coordinates and faces of an OBJ file, triangulating polygons.

    Raises:
        FaceModelFormatError: missing file, no vertices or faces, malformed records.
    """
    path = Path(path)
    data = _read_bytes(path)
    vertices = _parse_floats(_records(data, b"v "), 3, path, "vertex")
    if len(vertices) == 0:
        raise FaceModelFormatError(path, "no vertices ('v' lines): not an OBJ mesh")
    uvs = _parse_floats(_records(data, b"vt "), 2, path, "texture coordinate")
    face_block = _records(data, b"f ").replace(b"\r", b"")
    if not face_block:
        raise FaceModelFormatError(path, "no faces ('f' lines)")
    corner_vertex, corner_uv, sizes = _parse_faces(face_block, path)
    corner_vertex = _zero_based(corner_vertex, len(vertices), path, "vertices")
    split, source = triangulate(corner_vertex, sizes, vertices)
    uv_triangles = None
    if corner_uv is not None and len(uvs):
        uv_triangles = _zero_based(corner_uv, len(uvs), path, "texture coordinates")[split]
    return ObjMesh(vertices=vertices, triangles=corner_vertex[split],
                   uvs=uvs if uv_triangles is not None else None, uv_triangles=uv_triangles,
                   polygon_of_triangle=source)
