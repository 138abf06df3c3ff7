"""Wavefront OBJ + MTL + PNG textures, as Blender, MeshLab and game-engine importers read them.

Layout of one export of ``out/face.obj``::

    out/face.obj        v [r g b] / vt / vn / f v/vt/vn, millimetres, +y up, +z out of the face
    out/face.mtl        one material, texture paths relative to the MTL (bare file names)
    out/albedo.png      map_Kd  diffuse albedo, sRGB
    out/specular.png    map_Ks  specular albedo (F0), sRGB          (when present)
    out/roughness.png   map_Pr  perceptual roughness, linear grey   (when present)
    out/normal.png      map_Bump and norm: tangent-space normal map (when present)

Choices, because MTL has no single PBR standard:

* Roughness goes to ``Pr`` / ``map_Pr`` of the widely implemented PBR extension of MTL
  (Blender's importer, assimp, tinyobjloader, Model I/O), not to ``map_Ns``: ``Ns`` is a
  Phong exponent, and a roughness image read as exponents would be wrong. ``Ns`` is still
  written, as ``1000 (1 - r)^2`` of the mean roughness, the inverse of Blender's
  ``r = 1 - sqrt(Ns / 1000)``, for readers without the extension.
* The normal map is referenced twice: ``map_Bump`` is what Blender, Unity and most tools
  import as a normal map (common practice), ``norm`` is the PBR extension's key.
* ``Kd`` is 1 (the map carries the colour); ``Ks`` multiplies ``map_Ks`` (1 with a map,
  else 0.04, the reflectance of a skin-like dielectric).
* Vertex colours, for meshes without UVs (per-vertex albedo models such as BFM), go on
  the ``v`` lines as ``v x y z r g b`` in sRGB, the extension MeshLab, Blender and trimesh read.
* Parts (eyeballs, teeth, ...) follow the skin as ``o``/``g`` groups named by the part, each
  with ``usemtl`` of its own flat material (``Kd`` = the part's linear base colour, as
  Blender reads and writes ``Kd``; ``Pr`` its roughness). They share the ``v`` and ``vn``
  lines (one per vertex) and have no ``vt``. With parts the MTL is written even without
  texture maps (the skin's material is then plain white, ``Kd 1``); with vertex colours the
  parts' vertices carry their part's colour.

Files are written textures first, then the MTL, then the OBJ, each atomically: an OBJ that
exists is complete and so is everything it references.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet3d import __version__
from facenet3d.atomic import write_bytes, write_text
from facenet3d.errors import ExportError
from facenet3d.export.mesh import TexturedMesh, with_part_colors
from facenet3d.export.textures import encode_png, linear_to_srgb, texture_pixels

__all__ = ["MTL_KEYS", "write_obj"]

#: MTL keys each texture map is referenced by.
MTL_KEYS: dict[str, tuple[str, ...]] = {
    "albedo": ("map_Kd",),
    "specular": ("map_Ks",),
    "roughness": ("map_Pr",),
    "normal": ("map_Bump", "norm"),
}

_HEADER = "# facenet3d {version}: {what}\n# units: millimetres; right-handed, +y up, +z out of the face\n"


def _rows(prefix: str, array: np.ndarray, fmt: str) -> str:
    line = f"{prefix} {fmt}\n"
    return "".join(line % tuple(row) for row in array.tolist())


def _material_lines(name: str, kd: np.ndarray, ks: float, roughness: float) -> list[str]:
    return [
        f"newmtl {name}",
        "Kd {:.6f} {:.6f} {:.6f}".format(*kd),
        f"Ks {ks:.6f} {ks:.6f} {ks:.6f}",
        f"Ns {1000.0 * (1.0 - roughness) ** 2:.6f}",
        f"Pr {roughness:.6f}",
        "Pm 0.000000",
        "d 1.000000",
        "illum 2",
    ]


def _mtl_text(mesh: TexturedMesh, texture_files: dict[str, str]) -> str:
    rough = mesh.textures.get("roughness")
    if rough is None:
        mean_roughness = mesh.roughness
    else:
        mean_roughness = float(rough.mean() / (255.0 if rough.dtype == np.uint8 else 1.0))
    ks = 1.0 if "specular" in texture_files else 0.04
    lines = [f"# facenet3d {__version__}: material"]
    lines += _material_lines(mesh.name, np.ones(3), ks, mean_roughness)
    for name, file_name in texture_files.items():
        lines += [f"{key} {file_name}" for key in MTL_KEYS[name]]
    for part in mesh.parts:
        lines += ["", *_material_lines(part.name, part.color, 0.04, part.roughness)]
    return "\n".join(lines) + "\n"


def write_obj(mesh: TexturedMesh, path: str | Path, texture_prefix: str = "") -> list[Path]:
    """Write a mesh as OBJ (+ MTL + PNG textures when it has texture maps).

    Args:
        mesh: the mesh; positions are written in millimetres.
        path: destination ``.obj``; a path without suffix is a stem (``out/face`` ->
            ``out/face.obj``) and an existing folder gets ``<mesh.name>.obj``. The MTL gets
            the same stem; textures go beside it.
        texture_prefix: prepended to the texture file names (``albedo.png`` ...), so that
            several meshes can share a folder without overwriting each other's maps.

    Returns:
        The written paths: the OBJ first, then the MTL and the PNGs (when written).
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"{mesh.name}.obj"
    elif not path.suffix:
        path = path.with_suffix(".obj")
    elif path.suffix.lower() != ".obj":
        raise ExportError(path, "an OBJ file name must end in .obj")
    mtl_path = path.with_suffix(".mtl")
    written: list[Path] = []

    texture_files: dict[str, str] = {}
    for name in MTL_KEYS:  # a fixed order keeps the MTL stable
        if name in mesh.textures:
            texture_files[name] = f"{texture_prefix}{name}.png"
            png_path = path.parent / texture_files[name]
            png = encode_png(texture_pixels(name, mesh.textures[name]), source=png_path)
            written.append(write_bytes(png, png_path))
    with_mtl = bool(texture_files or mesh.parts)
    if with_mtl:
        written.insert(0, write_text(_mtl_text(mesh, texture_files), mtl_path))

    text = [_HEADER.format(version=__version__, what="mesh")]
    if with_mtl:
        text.append(f"mtllib {mtl_path.name}\n")
    text.append(f"o {mesh.name}\n")
    if mesh.vertex_colors is not None:
        part_colors = [linear_to_srgb(p.color) for p in mesh.parts]
        colors = with_part_colors(mesh, linear_to_srgb(mesh.vertex_colors), part_colors)
        text.append(_rows("v", np.concatenate([mesh.vertices, colors], axis=1), "%.9g %.9g %.9g %.6f %.6f %.6f"))
    else:
        text.append(_rows("v", mesh.vertices, "%.9g %.9g %.9g"))
    if mesh.has_uvs:
        text.append(_rows("vt", mesh.uvs, "%.9g %.9g"))
    text.append(_rows("vn", mesh.vertex_normals(), "%.7g %.7g %.7g"))
    if with_mtl:
        text.append(f"usemtl {mesh.name}\n")
    # OBJ indices start at 1; normals are per vertex, so a corner's vn index is its v index.
    v = mesh.triangles + 1
    if mesh.has_uvs:
        corners = np.stack([v, mesh.uv_triangles + 1, v], axis=2).reshape(-1, 9)
        text.append(_rows("f", corners, "%d/%d/%d %d/%d/%d %d/%d/%d"))
    else:
        text.append(_rows("f", np.stack([v, v], axis=2).reshape(-1, 6), "%d//%d %d//%d %d//%d"))
    for part in mesh.parts:
        v = part.triangles + 1
        text.append(f"o {part.name}\ng {part.name}\nusemtl {part.name}\n")
        text.append(_rows("f", np.stack([v, v], axis=2).reshape(-1, 6), "%d//%d %d//%d %d//%d"))
    written.insert(0, write_text("".join(text), path))
    return written
