"""Binary glTF 2.0 (``.glb``) with a PBR metallic-roughness material, written from scratch.

What goes where:

* Positions are converted from millimetres to **metres** (glTF's unit). The model frame
  (right-handed, +y up, +z out of the face) is glTF's own, so no rotation is applied.
* Vertices are split at UV seams (:func:`~facenet3d.export.mesh.split_uv_seams`): glTF has
  one index per corner. Normals are computed on the unsplit mesh, so seams stay smooth.
* UVs: glTF puts the UV origin at the top-left, so ``v`` is written as ``1 - v``; the PNG
  pixels are the same as in the OBJ export (row 0 at the top). Written ``(u, 1 - v)``
  addresses the same texel as OBJ's ``(u, v)``.
* Material: ``baseColorTexture`` = albedo (sRGB PNG); ``metallicRoughnessTexture`` packs
  roughness in G and metallic 0 in B (R = 255, unused); ``metallicFactor`` 0 (skin is a
  dielectric); ``normalTexture`` = the normal map. A specular map goes to
  ``KHR_materials_specular.specularColorTexture`` with ``specularColorFactor`` = 25 so that
  the extension's ``F0 = 0.04 * factor * texture`` equals the map's value (the map holds F0).
  ``TANGENT`` (:func:`~facenet3d.export.mesh.vertex_tangents`) is written with a normal map.
  ``doubleSided`` is true: a face mesh is an open surface, seen from behind through its
  boundary.
* Vertex colours (meshes without an albedo texture) go to ``COLOR_0``, linear RGB as glTF
  defines it; with an albedo texture they are left out, because glTF multiplies
  ``COLOR_0`` into the base colour.

Every GLB the tests write passes the Khronos glTF validator with no errors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from facenet3d import __version__
from facenet3d.atomic import write_bytes
from facenet3d.export.mesh import TexturedMesh, split_uv_seams, vertex_tangents
from facenet3d.export.textures import encode_png, metallic_roughness_image, texture_pixels

__all__ = ["METRES_PER_MM", "SPECULAR_COLOR_FACTOR", "encode_glb", "write_glb"]

METRES_PER_MM = 1e-3
#: KHR_materials_specular computes F0 = 0.04 * specularColorFactor * texture (for IOR 1.5);
#: this factor makes F0 equal the specular map's value.
SPECULAR_COLOR_FACTOR = 1.0 / 0.04

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5123, 5125
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_COMPONENTS = {np.float32: _FLOAT, np.uint16: _UNSIGNED_SHORT, np.uint32: _UNSIGNED_INT}
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


class _GltfBuilder:
    """Accumulates glTF JSON and the binary chunk; every buffer view starts 4-byte aligned."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": f"facenet3d {__version__}"},
            "buffers": [],
            "bufferViews": [],
            "accessors": [],
        }
        self.chunks: list[bytes] = []
        self.offset = 0

    def buffer_view(self, data: bytes, target: int | None = None) -> int:
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        pad = (-len(data)) % 4
        self.chunks.append(data + b"\x00" * pad)
        self.offset += len(data) + pad
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, target: int, with_bounds: bool = False) -> int:
        """Add a float32 attribute ``(N, C)`` or uint16/uint32 indices ``(N,)``."""
        component = _COMPONENTS[array.dtype.type]
        columns = 1 if array.ndim == 1 else array.shape[1]
        little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        acc: dict[str, Any] = {
            "bufferView": self.buffer_view(little_endian.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": _TYPES[columns],
        }
        if with_bounds:
            # The validator checks these against the data exactly: take them from the float32 values.
            acc["min"] = [float(x) for x in array.reshape(len(array), -1).min(axis=0)]
            acc["max"] = [float(x) for x in array.reshape(len(array), -1).max(axis=0)]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def texture(self, png: bytes, name: str) -> dict[str, int]:
        """Add a PNG image and a texture sampling it; returns a ``textureInfo``."""
        doc = self.doc
        if "samplers" not in doc:
            # Clamp, not repeat: a UV atlas must not bleed across its borders.
            doc["samplers"] = [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                                "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}]
        doc.setdefault("images", []).append({"bufferView": self.buffer_view(png), "mimeType": "image/png",
                                             "name": name})
        doc.setdefault("textures", []).append({"sampler": 0, "source": len(doc["images"]) - 1, "name": name})
        return {"index": len(doc["textures"]) - 1}

    def encode(self) -> bytes:
        binary = b"".join(self.chunks)
        self.doc["buffers"] = [{"byteLength": len(binary)}]
        text = json.dumps(self.doc, separators=(",", ":")).encode("utf-8")
        text += b" " * ((-len(text)) % 4)  # the JSON chunk is padded with spaces
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join([
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(text), b"JSON"), text,
            struct.pack("<I4s", len(binary), b"BIN\x00"), binary,
        ])


def _material(mesh: TexturedMesh, gltf: _GltfBuilder) -> dict[str, Any]:
    pbr: dict[str, Any] = {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0}
    material: dict[str, Any] = {"name": mesh.name, "pbrMetallicRoughness": pbr, "doubleSided": True}
    textures = {name: texture_pixels(name, image) for name, image in mesh.textures.items()}
    if "albedo" in textures:
        pbr["baseColorTexture"] = gltf.texture(encode_png(textures["albedo"]), "albedo")
    if "roughness" in textures:
        pbr["roughnessFactor"] = 1.0
        pbr["metallicRoughnessTexture"] = gltf.texture(
            encode_png(metallic_roughness_image(textures["roughness"])), "metallicRoughness")
    else:
        pbr["roughnessFactor"] = mesh.roughness
    if "normal" in textures:
        material["normalTexture"] = gltf.texture(encode_png(textures["normal"]), "normal")
    if "specular" in textures:
        material["extensions"] = {"KHR_materials_specular": {
            "specularColorFactor": [SPECULAR_COLOR_FACTOR] * 3,
            "specularColorTexture": gltf.texture(encode_png(textures["specular"]), "specular"),
        }}
        gltf.doc["extensionsUsed"] = ["KHR_materials_specular"]
    return material


def encode_glb(mesh: TexturedMesh) -> bytes:
    """The ``.glb`` file bytes of a mesh (see the module docstring for the mapping)."""
    gltf = _GltfBuilder()
    normals = mesh.vertex_normals()
    if mesh.has_uvs:
        split = split_uv_seams(mesh.triangles, mesh.uv_triangles)
        index, triangles = split.vertex_index, split.triangles
        uvs = mesh.uvs[split.uv_index] * np.array([1.0, -1.0], np.float32) + np.array([0.0, 1.0], np.float32)
    else:
        index, triangles, uvs = np.arange(len(mesh.vertices)), mesh.triangles, None

    positions = (mesh.vertices[index].astype(np.float64) * METRES_PER_MM).astype(np.float32)
    attributes = {
        "POSITION": gltf.accessor(positions, _ARRAY_BUFFER, with_bounds=True),
        "NORMAL": gltf.accessor(normals[index], _ARRAY_BUFFER),
    }
    if uvs is not None:
        attributes["TEXCOORD_0"] = gltf.accessor(uvs.astype(np.float32), _ARRAY_BUFFER)
    if "normal" in mesh.textures:
        # An explicit tangent frame makes the normal map read the same in every viewer.
        tangents = vertex_tangents(mesh.vertices[index], normals[index], mesh.uvs[split.uv_index], triangles)
        attributes["TANGENT"] = gltf.accessor(tangents, _ARRAY_BUFFER)
    if mesh.vertex_colors is not None and "albedo" not in mesh.textures:
        attributes["COLOR_0"] = gltf.accessor(mesh.vertex_colors[index], _ARRAY_BUFFER)
    # 16-bit indices when they fit; 65535 is excluded (the primitive-restart value).
    index_type = np.uint16 if len(positions) < 65535 else np.uint32
    indices = gltf.accessor(triangles.reshape(-1).astype(index_type), _ELEMENT_ARRAY_BUFFER)

    gltf.doc["materials"] = [_material(mesh, gltf)]
    gltf.doc["meshes"] = [{"name": mesh.name, "primitives": [
        {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}]
    gltf.doc["nodes"] = [{"name": mesh.name, "mesh": 0}]
    gltf.doc["scenes"] = [{"nodes": [0]}]
    gltf.doc["scene"] = 0
    return gltf.encode()


def write_glb(mesh: TexturedMesh, path: str | Path) -> Path:
    """Write a mesh as binary glTF 2.0, atomically; returns ``path``.

    Args:
        mesh: the mesh (millimetres; written in metres).
        path: destination ``.glb``.
    """
    return write_bytes(encode_glb(mesh), path)
