"""Binary PLY with per-vertex normals and colours (MeshLab, CloudCompare, Open3D, trimesh).

Vertex properties: ``x y z`` float (millimetres), ``nx ny nz`` float, and when the mesh
has colour ``red green blue`` uchar, sRGB-encoded as display tools expect. The colour is
the mesh's vertex colours, or else its albedo texture baked per vertex
(:func:`~facenet3d.export.mesh.vertex_colors_from_texture`), so a UV-textured face still
opens coloured. Faces: ``vertex_indices`` as a uchar-counted list of int.

Parts (eyeballs, teeth, ...) add their triangles after the skin's, and their vertices take
the part's flat colour (the skin is white when it has no colour of its own), so a PLY of a
head shows its eyes and teeth in any viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet3d import __version__
from facenet3d.atomic import write_bytes
from facenet3d.export.mesh import TexturedMesh, vertex_colors_from_texture, with_part_colors
from facenet3d.export.textures import linear_to_srgb, quantize

__all__ = ["encode_ply", "ply_vertex_colors", "write_ply"]


def ply_vertex_colors(mesh: TexturedMesh) -> np.ndarray | None:
    """``(V, 3)`` uint8 sRGB colours a PLY export carries, or None when the mesh has no colour."""
    colors = None
    if mesh.vertex_colors is not None:
        colors = quantize(linear_to_srgb(mesh.vertex_colors))
    elif "albedo" in mesh.textures:
        baked = vertex_colors_from_texture(mesh, "albedo")
        if mesh.textures["albedo"].dtype == np.uint8:  # pixels are sRGB already
            colors = np.round(baked).astype(np.uint8)
        else:
            colors = quantize(linear_to_srgb(baked))
    if not mesh.parts:
        return colors
    if colors is None:
        colors = np.full((len(mesh.vertices), 3), 255, np.uint8)
    return with_part_colors(mesh, colors, [quantize(linear_to_srgb(p.color)) for p in mesh.parts])


def encode_ply(mesh: TexturedMesh) -> bytes:
    """The binary little-endian PLY file bytes of a mesh."""
    colors = ply_vertex_colors(mesh)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(mesh.vertices), dtype=fields)
    normals = mesh.vertex_normals()
    for i, axis in enumerate("xyz"):
        vertices[axis] = mesh.vertices[:, i]
        vertices["n" + axis] = normals[:, i]
    if colors is not None:
        for i, channel in enumerate(("red", "green", "blue")):
            vertices[channel] = colors[:, i]
    triangles = np.concatenate([mesh.triangles, *(p.triangles for p in mesh.parts)])
    faces = np.empty(len(triangles), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    faces["count"] = 3
    faces["indices"] = triangles
    ply_types = {"<f4": "float", "u1": "uchar"}
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment facenet3d {__version__}; units: millimetres; +y up, +z out of the face",
        f"element vertex {len(vertices)}",
        *(f"property {ply_types[t]} {name}" for name, t in fields),
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    return ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes() + faces.tobytes()


def write_ply(mesh: TexturedMesh, path: str | Path) -> Path:
    """Write a mesh as binary PLY with normals and (when available) sRGB vertex colours, atomically.

    Args:
        mesh: the mesh (millimetres).
        path: destination ``.ply``.

    Returns:
        ``path``.
    """
    return write_bytes(encode_ply(mesh), path)
