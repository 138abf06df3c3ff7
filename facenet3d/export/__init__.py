"""Writing results: meshes (OBJ + MTL + PNG, GLB, PLY), images and JSON records, all atomically.

Example:
    >>> mesh = mesh_from_face_model(model, model.decode(identity=alpha))  # doctest: +SKIP
    >>> write_mesh(mesh, "out/face.obj"); write_mesh(mesh, "out/face.glb")  # doctest: +SKIP

A head model's separate parts (eyeballs, teeth, ...) and its named expression modes come along:
    >>> mesh = mesh_from_face_model(model, verts, expression=beta)  # doctest: +SKIP
    >>> write_glb(mesh, "head.glb")  # 53 ARKit morph targets, weights = beta  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from facenet3d.atomic import atomic_path, write_bytes, write_text
from facenet3d.errors import ExportError
from facenet3d.export.gltf import encode_glb, write_glb
from facenet3d.export.jsonfile import to_jsonable, write_json
from facenet3d.export.mesh import (
    SeamSplit,
    TexturedMesh,
    mesh_from_face_model,
    model_parts,
    split_uv_seams,
    surface_normals,
    vertex_colors_from_texture,
    vertex_normals,
    vertex_tangents,
)
from facenet3d.export.obj import write_obj
from facenet3d.export.parts import MeshPart, PartMaterial, part_material
from facenet3d.export.ply import encode_ply, write_ply
from facenet3d.export.textures import (
    encode_normal_map,
    encode_png,
    linear_to_srgb,
    sample_texture,
    srgb_to_linear,
    write_png,
)

#: File suffixes :func:`write_mesh` understands.
MESH_FORMATS = (".obj", ".glb", ".ply")


def write_mesh(mesh: TexturedMesh, path: str | Path) -> list[Path]:
    """Write a mesh in the format its suffix names (``.obj``, ``.glb`` or ``.ply``).

    Returns:
        The written paths (an OBJ also writes its MTL and textures).

    Raises:
        ExportError: an unknown suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        return write_obj(mesh, path)
    if suffix == ".glb":
        return [write_glb(mesh, path)]
    if suffix == ".ply":
        return [write_ply(mesh, path)]
    raise ExportError(path, f"unknown mesh format {path.suffix!r}; use one of {', '.join(MESH_FORMATS)}")


__all__ = [
    "MESH_FORMATS",
    "MeshPart",
    "PartMaterial",
    "SeamSplit",
    "TexturedMesh",
    "atomic_path",
    "encode_glb",
    "encode_normal_map",
    "encode_ply",
    "encode_png",
    "linear_to_srgb",
    "mesh_from_face_model",
    "model_parts",
    "part_material",
    "sample_texture",
    "split_uv_seams",
    "srgb_to_linear",
    "surface_normals",
    "to_jsonable",
    "vertex_colors_from_texture",
    "vertex_normals",
    "vertex_tangents",
    "write_bytes",
    "write_glb",
    "write_json",
    "write_mesh",
    "write_obj",
    "write_ply",
    "write_png",
    "write_text",
]
