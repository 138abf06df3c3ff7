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
* Parts (eyeballs, teeth, ...) are further primitives of the same glTF mesh, each with its
  own vertices (those its triangles use), normals and a flat material (``baseColorFactor``,
  ``roughnessFactor``, metallic 0).
* Morph targets (a face model's expression modes): every primitive gets the same targets in
  the same order, as glTF requires, so one set of weights drives skin and parts alike (the
  jaw's teeth follow ``jawOpen``). ``POSITION`` offsets are in metres like the positions;
  ``mesh.weights`` holds the mesh's morph weights and ``mesh.extras.targetNames`` the names
  (read by three.js, Blender and Unity), and the ``POSITION`` accessor holds the **base**
  shape (:meth:`~facenet3d.export.mesh.TexturedMesh.base_vertices`, the neutral face), so
  the asset opens showing the mesh's vertices. An offset smaller than
  :data:`MORPH_EPSILON_MM` is written as zero (it is below float32's resolution of the
  positions); each target's accessor is then stored densely, as a ``sparse`` accessor (only
  the vertices it moves) or with no data at all (moves none of a primitive's vertices),
  whichever is smallest. ``NORMAL`` offsets are optional (``morph_normals``); without them,
  viewers shade every expression with the base shape's normals.

* Animation (:class:`GltfAnimation`, e.g. a video's expression and head pose): the mesh node
  hangs under a ``head`` node; one ``animation`` has a ``weights`` channel on the mesh node
  (one keyframe per frame, the ``K`` weights of a keyframe consecutive, ``LINEAR``) and a
  ``rotation`` channel (unit quaternions ``x, y, z, w``, ``LINEAR``: glTF interpolates them
  spherically) on the head node. ``mesh.weights`` holds the first keyframe.

Every GLB the tests write passes the Khronos glTF validator with no errors.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facenet3d import __version__
from facenet3d.atomic import write_bytes
from facenet3d.export.mesh import TexturedMesh, split_uv_seams, surface_normals, vertex_tangents
from facenet3d.export.parts import MeshPart
from facenet3d.export.textures import encode_png, metallic_roughness_image, texture_pixels

__all__ = ["METRES_PER_MM", "MORPH_EPSILON_MM", "SPECULAR_COLOR_FACTOR", "GltfAnimation", "encode_glb",
           "matrix_to_quaternion", "write_glb"]

METRES_PER_MM = 1e-3
#: Morph offsets (largest component, mm) at or below this are written as zero: half a float32
#: step of a position 100 mm from the origin is 3.7e-6 mm, so nothing a viewer shows changes,
#: and 53 such offsets at full weight add up to under 1e-4 mm.
MORPH_EPSILON_MM = 1e-6
#: KHR_materials_specular computes F0 = 0.04 * specularColorFactor * texture (for IOR 1.5);
#: this factor makes F0 equal the specular map's value.
SPECULAR_COLOR_FACTOR = 1.0 / 0.04

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UNSIGNED_BYTE, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5121, 5123, 5125
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_COMPONENTS = {np.float32: _FLOAT, np.uint8: _UNSIGNED_BYTE, np.uint16: _UNSIGNED_SHORT, np.uint32: _UNSIGNED_INT}
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


@dataclass
class GltfAnimation:
    """A morph-weight and head-rotation animation over ``N`` keyframes.

    Attributes:
        times: ``(N,)`` seconds, strictly increasing.
        weights: ``(N, K)`` morph weights per keyframe (``K`` = the mesh's morph targets).
        rotations: ``(N, 3, 3)`` rotation of the head node per keyframe (None: no rotation channel).
        name: the animation's name.
    """

    times: np.ndarray
    weights: np.ndarray
    rotations: np.ndarray | None = None
    name: str = "face"


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotations -> ``(..., 4)`` unit quaternions ``(x, y, z, w)`` with ``w >= 0``.

    From the eigenvector of the largest eigenvalue of Bar-Itzhack's symmetric 4x4 matrix, which
    is exact for rotations and robust for nearly orthogonal ones.
    """
    m = np.asarray(matrix, np.float64)
    xx, xy, xz = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    yx, yy, yz = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    zx, zy, zz = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    k = np.stack([
        np.stack([xx - yy - zz, yx + xy, zx + xz, zy - yz], -1),
        np.stack([yx + xy, yy - xx - zz, zy + yz, xz - zx], -1),
        np.stack([zx + xz, zy + yz, zz - xx - yy, yx - xy], -1),
        np.stack([zy - yz, xz - zx, yx - xy, xx + yy + zz], -1)], -2) / 3.0
    q = np.linalg.eigh(k)[1][..., -1]
    return q * np.where(q[..., 3:] < 0, -1.0, 1.0)


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

    def accessor(self, array: np.ndarray, target: int | None, with_bounds: bool = False) -> int:
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

    def morph_accessor(self, offsets: np.ndarray, with_bounds: bool) -> int:
        """Add ``(N, 3)`` float32 morph offsets as the smallest of: no data (all zero), sparse, dense.

        Zero rows cost nothing in a sparse accessor (its base is zeros): only the ``c`` rows a
        target moves are stored, as ``c`` indices and ``c`` values.
        """
        moved = np.flatnonzero(np.any(offsets != 0.0, axis=1))
        n = len(offsets)
        index_type = np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.uint32
        sparse_bytes = len(moved) * (12 + np.dtype(index_type).itemsize)
        if len(moved) and sparse_bytes >= n * 12:
            return self.accessor(offsets, _ARRAY_BUFFER, with_bounds)
        acc: dict[str, Any] = {"componentType": _FLOAT, "count": n, "type": "VEC3"}
        if len(moved):
            # Sparse views carry no target: they are not vertex attributes themselves.
            values = np.ascontiguousarray(offsets[moved], dtype="<f4")
            acc["sparse"] = {
                "count": len(moved),
                "indices": {"bufferView": self.buffer_view(moved.astype(np.dtype(index_type).newbyteorder("<"))
                                                           .tobytes()),
                            "componentType": _COMPONENTS[index_type]},
                "values": {"bufferView": self.buffer_view(values.tobytes())},
            }
        if with_bounds:
            acc["min"] = [float(x) for x in offsets.min(axis=0)]
            acc["max"] = [float(x) for x in offsets.max(axis=0)]
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


def _part_material(part: MeshPart) -> dict[str, Any]:
    return {"name": part.name, "doubleSided": True, "pbrMetallicRoughness": {
        "baseColorFactor": [*(float(c) for c in part.color), 1.0], "metallicFactor": 0.0,
        "roughnessFactor": part.roughness}}


class _MorphOffsets:
    """Per-target offsets of the whole mesh in glTF units, cut out per primitive."""

    def __init__(self, mesh: TexturedMesh, base_mm: np.ndarray, base_normals: np.ndarray, normals: bool):
        self.positions = np.zeros((0, len(mesh.vertices), 3), np.float32)
        self.normals: np.ndarray | None = None
        if not mesh.has_morph_targets:
            return
        targets = mesh.morph_targets
        small = np.abs(targets).max(axis=2, keepdims=True) <= MORPH_EPSILON_MM
        self.positions = np.where(small, 0.0, targets.astype(np.float64) * METRES_PER_MM).astype(np.float32)
        if normals:
            # The normals each target alone gives, minus the base's: what exporters such as
            # Blender write (normals do not add linearly, so mixed expressions are approximate).
            self.normals = np.stack([
                surface_normals(base_mm + t, mesh.triangles, mesh.parts) - base_normals for t in targets])
            self.normals[np.abs(self.normals).max(axis=2) <= 1e-6] = 0.0

    def write(self, gltf: _GltfBuilder, index: np.ndarray) -> list[dict[str, int]]:
        """``targets`` of a primitive made of the mesh vertices ``index``."""
        out = []
        for k in range(len(self.positions)):
            target = {"POSITION": gltf.morph_accessor(self.positions[k, index], with_bounds=True)}
            if self.normals is not None:
                target["NORMAL"] = gltf.morph_accessor(self.normals[k, index], with_bounds=False)
            out.append(target)
        return out


def _primitive(gltf: _GltfBuilder, positions_mm: np.ndarray, normals: np.ndarray, index: np.ndarray,
               triangles: np.ndarray, material: int, morphs: _MorphOffsets) -> tuple[dict[str, Any], dict[str, int]]:
    """A triangle primitive of the mesh vertices ``index`` (``triangles`` index into ``index``)."""
    positions = (positions_mm[index] * METRES_PER_MM).astype(np.float32)
    attributes = {
        "POSITION": gltf.accessor(positions, _ARRAY_BUFFER, with_bounds=True),
        "NORMAL": gltf.accessor(normals[index], _ARRAY_BUFFER),
    }
    # 16-bit indices when they fit; 65535 is excluded (the primitive-restart value).
    index_type = np.uint16 if len(positions) < 65535 else np.uint32
    primitive: dict[str, Any] = {
        "attributes": attributes, "material": material, "mode": 4,
        "indices": gltf.accessor(triangles.reshape(-1).astype(index_type), _ELEMENT_ARRAY_BUFFER)}
    targets = morphs.write(gltf, index)
    if targets:
        primitive["targets"] = targets
    return primitive, attributes


def encode_glb(mesh: TexturedMesh, morph_normals: bool = False, animation: GltfAnimation | None = None) -> bytes:
    """The ``.glb`` file bytes of a mesh (see the module docstring for the mapping).

    Args:
        mesh: the mesh (millimetres; written in metres).
        morph_normals: also write ``NORMAL`` offsets for the morph targets (about doubles
            their size; off: viewers shade every expression with the base shape's normals).
        animation: keyframed morph weights and head rotation (the mesh must have as many morph
            targets as the animation has weights per keyframe).
    """
    gltf = _GltfBuilder()
    base = mesh.base_vertices()
    normals = mesh.normals if mesh.normals is not None else surface_normals(base, mesh.triangles, mesh.parts)
    morphs = _MorphOffsets(mesh, base, normals, morph_normals)
    if mesh.has_uvs:
        split = split_uv_seams(mesh.triangles, mesh.uv_triangles)
        index, triangles = split.vertex_index, split.triangles
        uvs = mesh.uvs[split.uv_index] * np.array([1.0, -1.0], np.float32) + np.array([0.0, 1.0], np.float32)
    else:
        index, triangles = np.unique(mesh.triangles, return_inverse=True)
        triangles, uvs = triangles.reshape(-1, 3), None

    gltf.doc["materials"] = [_material(mesh, gltf)]
    skin, attributes = _primitive(gltf, base, normals, index, triangles, 0, morphs)
    if uvs is not None:
        attributes["TEXCOORD_0"] = gltf.accessor(uvs.astype(np.float32), _ARRAY_BUFFER)
    if "normal" in mesh.textures:
        # An explicit tangent frame makes the normal map read the same in every viewer.
        tangents = vertex_tangents(base[index], normals[index], mesh.uvs[split.uv_index], triangles)
        attributes["TANGENT"] = gltf.accessor(tangents, _ARRAY_BUFFER)
    if mesh.vertex_colors is not None and "albedo" not in mesh.textures:
        attributes["COLOR_0"] = gltf.accessor(mesh.vertex_colors[index], _ARRAY_BUFFER)
    primitives = [skin]
    for part in mesh.parts:
        gltf.doc["materials"].append(_part_material(part))
        part_index, part_triangles = np.unique(part.triangles, return_inverse=True)
        primitives.append(_primitive(gltf, base, normals, part_index, part_triangles.reshape(-1, 3),
                                     len(gltf.doc["materials"]) - 1, morphs)[0])

    gltf_mesh: dict[str, Any] = {"name": mesh.name, "primitives": primitives}
    if mesh.has_morph_targets:
        gltf_mesh["weights"] = [float(w) for w in mesh.morph_weights]
        gltf_mesh["extras"] = {"targetNames": list(mesh.morph_names)}
    gltf.doc["meshes"] = [gltf_mesh]
    gltf.doc["nodes"] = [{"name": mesh.name, "mesh": 0}]
    gltf.doc["scenes"] = [{"nodes": [0]}]
    gltf.doc["scene"] = 0
    if animation is not None:
        _add_animation(gltf, mesh, animation)
    return gltf.encode()


def _add_animation(gltf: _GltfBuilder, mesh: TexturedMesh, animation: GltfAnimation) -> None:
    """Put the mesh node under a ``head`` node and animate the weights and the head's rotation."""
    times = np.asarray(animation.times, np.float32).reshape(-1)
    weights = np.asarray(animation.weights, np.float32)
    n = len(times)
    if n < 1 or weights.shape != (n, len(mesh.morph_names) if mesh.has_morph_targets else -1):
        raise ValueError(f"animation weights {weights.shape} do not fit {n} keyframes of the mesh's "
                         f"{len(mesh.morph_names) if mesh.has_morph_targets else 0} morph targets")
    if n > 1 and not np.all(np.diff(times) > 0):
        raise ValueError("animation times must increase strictly (as float32 seconds)")
    gltf.doc["meshes"][0]["weights"] = [float(w) for w in weights[0]]
    gltf.doc["nodes"].append({"name": "head", "children": [0]})
    gltf.doc["scenes"] = [{"nodes": [1]}]
    time_input = gltf.accessor(times, target=None, with_bounds=True)
    samplers = [{"input": time_input, "interpolation": "LINEAR",
                 "output": gltf.accessor(weights.reshape(-1), target=None)}]
    channels = [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]
    if animation.rotations is not None:
        quats = matrix_to_quaternion(animation.rotations)
        # Consecutive keyframes on the same hemisphere: linear slerp then takes the short way.
        for i in range(1, len(quats)):
            if np.dot(quats[i], quats[i - 1]) < 0:
                quats[i] = -quats[i]
        quats = quats / np.linalg.norm(quats, axis=-1, keepdims=True)
        gltf.doc["nodes"][1]["rotation"] = [float(v) for v in quats[0].astype(np.float32)]
        samplers.append({"input": time_input, "interpolation": "LINEAR",
                         "output": gltf.accessor(quats.astype(np.float32), target=None)})
        channels.append({"sampler": 1, "target": {"node": 1, "path": "rotation"}})
    gltf.doc["animations"] = [{"name": animation.name, "samplers": samplers, "channels": channels}]


def write_glb(mesh: TexturedMesh, path: str | Path, morph_normals: bool = False,
              animation: GltfAnimation | None = None) -> Path:
    """Write a mesh as binary glTF 2.0, atomically; returns ``path``.

    Args:
        mesh: the mesh (millimetres; written in metres).
        path: destination ``.glb``.
        morph_normals: also write ``NORMAL`` offsets for the morph targets (see :func:`encode_glb`).
        animation: keyframed morph weights and head rotation (see :func:`encode_glb`).
    """
    return write_bytes(encode_glb(mesh, morph_normals, animation), path)
