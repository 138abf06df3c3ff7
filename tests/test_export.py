"""Mesh, image and JSON export: round trips through trimesh / PIL / OpenCV, and the Khronos glTF validator.

The meshes are synthetic: a UV-mapped tube whose first and last columns are the same
vertices with different UVs (a seam), with a texture that has a distinct colour in each
corner, so that a wrong UV or image flip in any format reads back the wrong colour.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from gltf_validation import assert_valid_gltf, run_validator
from PIL import Image

from facenet3d.errors import ExportError, Facenet3DError
from facenet3d.export import (
    TexturedMesh,
    atomic_path,
    encode_normal_map,
    linear_to_srgb,
    mesh_from_face_model,
    sample_texture,
    split_uv_seams,
    srgb_to_linear,
    vertex_colors_from_texture,
    vertex_normals,
    vertex_tangents,
    write_bytes,
    write_glb,
    write_json,
    write_mesh,
    write_obj,
    write_ply,
    write_png,
)
from facenet3d.export.gltf import SPECULAR_COLOR_FACTOR

RED, GREEN, BLUE, GREY = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.2, 0.2, 0.2)


# ---------------------------------------------------------------------------------------- helpers
def corner_texture(size: int = 16) -> np.ndarray:
    """Linear RGB texture, grey with red top-left, green bottom-left, blue top-right corners."""
    tex = np.full((size, size, 3), GREY, np.float32)
    q = size // 4
    tex[:q, :q] = RED
    tex[-q:, :q] = GREEN
    tex[:q, -q:] = BLUE
    return tex


def tube(rows: int = 5, cols: int = 8, radius: float = 40.0, **textures) -> TexturedMesh:
    """An open cylinder around +y (mm), u around it, v up; the u = 0 / u = 1 column is a UV seam."""
    theta = np.arange(cols) * 2 * np.pi / cols
    ys = np.linspace(-50.0, 50.0, rows)
    vertices = np.array([[radius * np.sin(t), y, radius * np.cos(t)] for y in ys for t in theta])
    uvs = np.array([[j / cols, i / (rows - 1)] for i in range(rows) for j in range(cols + 1)])
    tris, uv_tris = [], []
    for i in range(rows - 1):
        for j in range(cols):
            a, b = i * cols + j, i * cols + (j + 1) % cols
            c, d = a + cols, b + cols
            ua = i * (cols + 1) + j
            ub, uc, ud = ua + 1, ua + cols + 1, ua + cols + 2
            tris += [[a, b, d], [a, d, c]]
            uv_tris += [[ua, ub, ud], [ua, ud, uc]]
    return TexturedMesh(vertices, np.array(tris), uvs, np.array(uv_tris), textures=textures)


def full_tube() -> TexturedMesh:
    h = 8
    ramp = np.linspace(0.1, 0.9, h * h, dtype=np.float32).reshape(h, h, 1)
    tangent_normals = np.dstack([np.full((h, h), 0.3), np.full((h, h), -0.2), np.ones((h, h))])
    return tube(albedo=corner_texture(), specular=np.full((h, h, 3), 0.06, np.float32), roughness=ramp,
                normal=encode_normal_map(tangent_normals))


@dataclass
class Glb:
    """A minimal independent GLB reader: the JSON and accessors as numpy arrays."""

    doc: dict
    binary: bytes

    @classmethod
    def read(cls, path: Path) -> Glb:
        data = path.read_bytes()
        magic, version, length = struct.unpack_from("<4sII", data, 0)
        assert (magic, version, length) == (b"glTF", 2, len(data))
        json_len, json_type = struct.unpack_from("<I4s", data, 12)
        assert json_type == b"JSON"
        doc = json.loads(data[20:20 + json_len])
        bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
        assert bin_type == b"BIN\x00"
        return cls(doc, data[28 + json_len:28 + json_len + bin_len])

    def view(self, index: int) -> bytes:
        v = self.doc["bufferViews"][index]
        return self.binary[v.get("byteOffset", 0):v.get("byteOffset", 0) + v["byteLength"]]

    def accessor(self, index: int) -> np.ndarray:
        a = self.doc["accessors"][index]
        dtype = {5126: "<f4", 5125: "<u4", 5123: "<u2"}[a["componentType"]]
        cols = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        return np.frombuffer(self.view(a["bufferView"]), dtype=dtype).reshape(a["count"], cols)

    def image(self, texture_info: dict) -> np.ndarray:
        source = self.doc["textures"][texture_info["index"]]["source"]
        png = self.view(self.doc["images"][source]["bufferView"])
        return np.asarray(Image.open(io.BytesIO(png)))


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def expected_pixels(linear: np.ndarray) -> np.ndarray:
    """Independent sRGB encoding (the IEC 61966-2-1 formula) of linear values to uint8."""
    x = np.clip(linear.astype(np.float64), 0, 1)
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    return np.round(s * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- atomic writes
def test_atomic_path_renames_on_success_and_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "params.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing appears under the final name before the block ends
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["params.json"]

    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.bin"):
            pass
    assert not (tmp_path / "never.bin").exists()


def test_failed_encoding_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match="NaN"):
        write_png(np.full((4, 4), np.nan), tmp_path / "x.png")
    with pytest.raises(ExportError, match=r"x\.json: \$\['b'\]\[1\]\['c'\]: .* type 'object'"):
        write_json({"a": {1, 2}, "b": [0, {"c": object()}]}, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- PNG
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_write_png_8_bit_round_trip(tmp_path, channels):
    rng = np.random.default_rng(0)
    shape = (5, 7) if channels is None else (5, 7, channels)
    image = rng.random(shape).astype(np.float32)
    path = write_png(image, tmp_path / "a.png")
    back = read_png(path)
    expected = np.round(image * 255).astype(np.uint8)
    np.testing.assert_array_equal(back, expected.reshape(back.shape))
    mode = {None: "L", 1: "L", 3: "RGB", 4: "RGBA"}[channels]
    assert Image.open(path).mode == mode
    # uint8 input is written untouched.
    write_png(expected, tmp_path / "b.png")
    np.testing.assert_array_equal(read_png(tmp_path / "b.png"), back)


def test_write_png_16_bit_and_torch_input(tmp_path):
    import torch

    image = torch.linspace(0, 1, 3 * 4 * 3).reshape(3, 4, 3).requires_grad_()
    path = write_png(image, tmp_path / "deep.png", bits=16)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]  # OpenCV reads BGR
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, np.round(image.detach().numpy() * 65535).astype(np.uint16))


def test_write_png_rejects_bad_images(tmp_path):
    with pytest.raises(ExportError, match="shape"):
        write_png(np.zeros((4, 4, 2)), tmp_path / "two.png")
    with pytest.raises(ExportError, match="dtype"):
        write_png(np.zeros((4, 4), np.int32), tmp_path / "int.png")
    with pytest.raises(ExportError, match="empty"):
        write_png(np.zeros((0, 4)), tmp_path / "empty.png")
    with pytest.raises(ExportError, match="bit depth"):
        write_png(np.zeros((2, 2)), tmp_path / "b.png", bits=12)


def test_srgb_transfer_function():
    # Reference values of IEC 61966-2-1.
    np.testing.assert_allclose(linear_to_srgb(np.array([0.0, 0.0031308, 0.18, 0.5, 1.0])),
                               [0.0, 0.0404500, 0.4613561, 0.7353570, 1.0], atol=1e-6)
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    assert linear_to_srgb(np.float32(0.5)).dtype == np.float32


# ---------------------------------------------------------------------------------------- JSON
def test_write_json_numpy_torch_and_non_finite(tmp_path):
    import torch

    @dataclass
    class Pose:
        yaw: float
        translation: np.ndarray

    record = {
        "expression": np.arange(3, dtype=np.float32) / 4,
        "landmarks": torch.tensor([[1.5, float("nan")]], requires_grad=True),
        "count": np.int64(7),
        "ok": np.bool_(True),
        "pose": Pose(np.float32(0.25), np.array([1, 2, 3])),
        "file": Path("a/b.jpg"),
        np.int32(3): "int key",
        "inf": float("inf"),
    }
    path = write_json(record, tmp_path / "params.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "expression": [0.0, 0.25, 0.5], "landmarks": [[1.5, None]], "count": 7, "ok": True,
        "pose": {"yaw": 0.25, "translation": [1, 2, 3]}, "file": "a/b.jpg", "3": "int key", "inf": None,
    }


# ---------------------------------------------------------------------------------------- geometry
def test_split_uv_seams_duplicates_exactly_the_seam_vertices():
    mesh = tube(rows=5, cols=8)
    split = split_uv_seams(mesh.triangles, mesh.uv_triangles)
    # Each of the 5 seam vertices gets a second copy: 40 + 5 output vertices.
    assert len(split.vertex_index) == 45
    seam = np.flatnonzero(np.bincount(split.vertex_index) == 2)
    np.testing.assert_array_equal(seam, np.arange(0, 40, 8))
    # Every corner keeps its vertex and its UV.
    np.testing.assert_array_equal(split.vertex_index[split.triangles], mesh.triangles)
    np.testing.assert_array_equal(split.uv_index[split.triangles], mesh.uv_triangles)
    # Without seams the order is the original one.
    no_seam = split_uv_seams(mesh.triangles, mesh.triangles)
    np.testing.assert_array_equal(no_seam.vertex_index, np.arange(40))
    np.testing.assert_array_equal(no_seam.triangles, mesh.triangles)


def test_numpy_vertex_normals_equal_the_torch_ones():
    import torch

    from facenet3d.geometry import vertex_normals as torch_vertex_normals

    rng = np.random.default_rng(1)
    mesh = tube()
    verts = mesh.vertices + rng.normal(0, 2, mesh.vertices.shape).astype(np.float32)
    ours = vertex_normals(verts, mesh.triangles)
    ref = torch_vertex_normals(torch.from_numpy(verts)[None], torch.from_numpy(mesh.triangles))[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # A cylinder's normals point away from its axis (outward for counter-clockwise triangles).
    radial = mesh.vertices * [1, 0, 1]
    assert (np.sum(vertex_normals(mesh.vertices, mesh.triangles) * radial, axis=1) > 0).all()


@pytest.mark.parametrize("mirrored", [False, True])
def test_vertex_tangents_follow_u_and_image_up(mirrored):
    # A square in the z = 0 plane facing +z; image "up" (v) is +y; u runs along +x or, mirrored, -x.
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = verts[:, :2].copy()
    if mirrored:
        uvs[:, 0] = 1 - uvs[:, 0]
    normals = vertex_normals(verts, tris)
    frame = vertex_tangents(verts, normals, uvs, tris)
    t, w = frame[:, :3], frame[:, 3]
    np.testing.assert_allclose(t, np.tile([-1.0 if mirrored else 1.0, 0, 0], (4, 1)), atol=1e-6)
    np.testing.assert_array_equal(w, -1.0 if mirrored else 1.0)
    bitangent = np.cross(normals, t) * w[:, None]  # glTF's definition
    np.testing.assert_allclose(bitangent, np.tile([0, 1.0, 0], (4, 1)), atol=1e-6)


def test_sample_texture_uses_obj_uvs_and_pixel_centres():
    h, w = 6, 10
    ys, xs = np.mgrid[0:h, 0:w]
    # Channel 0 = u of the pixel centre, channel 1 = OBJ v of the pixel centre.
    image = np.dstack([(xs + 0.5) / w, 1 - (ys + 0.5) / h]).astype(np.float32)
    uv = np.array([[0.25, 0.4], [0.5, 0.75], [0.33, 0.61]])
    np.testing.assert_allclose(sample_texture(image, uv), uv, atol=1e-6)


def test_vertex_colors_from_texture_average_both_sides_of_a_seam():
    mesh = tube(rows=5, cols=8, albedo=corner_texture(16))
    colors = vertex_colors_from_texture(mesh)
    # Vertex 20 (row 2, column 4, uv (0.5, 0.5)) lies in the grey middle.
    np.testing.assert_allclose(colors[20], GREY, atol=1e-6)
    # Vertex 0 sits on the seam at uv (0, 0) (green corner) and uv (1, 0) (grey corner).
    corners = np.flatnonzero(mesh.triangles.reshape(-1) == 0)
    uvs = mesh.uvs[mesh.uv_triangles.reshape(-1)[corners]]
    assert {tuple(u) for u in uvs} == {(0.0, 0.0), (1.0, 0.0)}
    expected = np.mean([GREEN if u[0] == 0 else GREY for u in uvs], axis=0)
    np.testing.assert_allclose(colors[0], expected, atol=1e-6)


# ---------------------------------------------------------------------------------------- OBJ
def test_obj_round_trip_with_all_maps(tmp_path):
    mesh = full_tube()
    written = write_obj(mesh, tmp_path / "face.obj")
    names = [p.name for p in written]
    assert names == ["face.obj", "face.mtl", "albedo.png", "specular.png", "roughness.png", "normal.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left

    loaded = trimesh.load(tmp_path / "face.obj", process=False)
    # trimesh splits vertices per (v, vt) like glTF: 40 + 5 seam copies.
    assert loaded.vertices.shape == (45, 3)
    split = split_uv_seams(mesh.triangles, mesh.uv_triangles)
    ours = np.hstack([mesh.vertices[split.vertex_index], mesh.uvs[split.uv_index]])
    theirs = np.hstack([loaded.vertices, loaded.visual.uv])
    np.testing.assert_allclose(theirs[np.lexsort(theirs.T)], ours[np.lexsort(ours.T)], atol=1e-5)
    # Normals survive (smooth across the seam: both copies share the vertex normal).
    np.testing.assert_allclose(np.linalg.norm(loaded.vertex_normals, axis=1), 1, atol=1e-5)

    # The diffuse map is sRGB-encoded and its corners read back where the UVs say.
    material = loaded.visual.material
    np.testing.assert_array_equal(np.asarray(material.image), expected_pixels(corner_texture()))
    uv_top_left = np.flatnonzero((loaded.visual.uv == [0, 1]).all(axis=1))
    uv_bottom_left = np.flatnonzero((loaded.visual.uv == [0, 0]).all(axis=1))
    uv_top_right = np.flatnonzero((loaded.visual.uv == [1, 1]).all(axis=1))
    color = trimesh.visual.color.uv_to_color
    assert tuple(color(loaded.visual.uv[uv_top_left], material.image)[0, :3]) == (255, 0, 0)
    assert tuple(color(loaded.visual.uv[uv_bottom_left], material.image)[0, :3]) == (0, 255, 0)
    assert tuple(color(loaded.visual.uv[uv_top_right], material.image)[0, :3]) == (0, 0, 255)

    # The MTL names every map by a relative path, and each PNG holds the right pixels.
    mtl = dict(line.split(None, 1) for line in (tmp_path / "face.mtl").read_text().splitlines()
               if line and not line.startswith("#"))
    assert {k: mtl[k] for k in ("map_Kd", "map_Ks", "map_Pr", "map_Bump", "norm")} == {
        "map_Kd": "albedo.png", "map_Ks": "specular.png", "map_Pr": "roughness.png",
        "map_Bump": "normal.png", "norm": "normal.png"}
    assert float(mtl["Pr"]) == pytest.approx(0.5, abs=1e-6)  # the ramp's mean
    assert float(mtl["Ns"]) == pytest.approx(1000 * 0.5**2, abs=1e-3)
    np.testing.assert_array_equal(read_png(tmp_path / "specular.png"),
                                  expected_pixels(mesh.textures["specular"]))
    np.testing.assert_array_equal(read_png(tmp_path / "roughness.png"),
                                  np.round(mesh.textures["roughness"][..., 0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(read_png(tmp_path / "normal.png"),
                                  np.round(mesh.textures["normal"] * 255).astype(np.uint8))


def test_obj_texture_prefix_and_untextured_mesh(tmp_path):
    mesh = tube(albedo=corner_texture())
    written = write_obj(mesh, tmp_path / "a.obj", texture_prefix="a_")
    assert [p.name for p in written] == ["a.obj", "a.mtl", "a_albedo.png"]
    assert "map_Kd a_albedo.png" in (tmp_path / "a.mtl").read_text()
    # A folder gets <name>.obj, a stem gets .obj; another suffix is an error.
    assert write_obj(mesh, tmp_path)[0] == tmp_path / "face.obj"
    assert write_obj(mesh, tmp_path / "stem")[0] == tmp_path / "stem.obj"
    with pytest.raises(ExportError, match=r"x\.ply: .*\.obj"):
        write_obj(mesh, tmp_path / "x.ply")
    plain = TexturedMesh(mesh.vertices, mesh.triangles)
    assert [p.name for p in write_obj(plain, tmp_path / "plain.obj")] == ["plain.obj"]
    assert "mtllib" not in (tmp_path / "plain.obj").read_text()
    loaded = trimesh.load(tmp_path / "plain.obj", process=False)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(loaded.faces, mesh.triangles)


# ---------------------------------------------------------------------------------------- GLB
def test_glb_round_trip_flips_v_and_packs_the_material(tmp_path):
    mesh = full_tube()
    path = write_glb(mesh, tmp_path / "face.glb")
    glb = Glb.read(path)
    primitive = glb.doc["meshes"][0]["primitives"][0]
    attributes = primitive["attributes"]
    assert set(attributes) == {"POSITION", "NORMAL", "TEXCOORD_0", "TANGENT"}

    # Positions in metres, split at the seam; each output vertex carries one of its UVs.
    split = split_uv_seams(mesh.triangles, mesh.uv_triangles)
    positions = glb.accessor(attributes["POSITION"])
    np.testing.assert_allclose(positions, mesh.vertices[split.vertex_index] / 1000, atol=1e-7)
    np.testing.assert_array_equal(glb.accessor(primitive["indices"]).reshape(-1, 3), split.triangles)

    # glTF UVs are (u, 1 - v): the vertex at OBJ uv (0, 1) has glTF uv (0, 0), and the
    # pixel there (row 0, the top of the PNG) is the red corner.
    gltf_uv = glb.accessor(attributes["TEXCOORD_0"])
    np.testing.assert_allclose(gltf_uv, mesh.uvs[split.uv_index] * [1, -1] + [0, 1], atol=1e-7)
    pbr = glb.doc["materials"][0]["pbrMetallicRoughness"]
    albedo = glb.image(pbr["baseColorTexture"])
    np.testing.assert_array_equal(albedo, expected_pixels(corner_texture()))
    top_left = np.flatnonzero((gltf_uv == [0, 0]).all(axis=1))
    assert len(top_left) == 1
    h, w = albedo.shape[:2]
    u, v = gltf_uv[top_left[0]]
    assert tuple(albedo[int(v * h), int(u * w)]) == (255, 0, 0)
    assert np.allclose(positions[top_left[0]], [0, 0.05, 0.04])  # the top row (+y) at u = 0

    # Roughness in G, metallic 0 in B; normal map and specular F0 as written.
    mr = glb.image(pbr["metallicRoughnessTexture"])
    np.testing.assert_array_equal(mr[..., 1], np.round(mesh.textures["roughness"][..., 0] * 255))
    assert (mr[..., 2] == 0).all() and pbr["metallicFactor"] == 0 and pbr["roughnessFactor"] == 1
    material = glb.doc["materials"][0]
    np.testing.assert_array_equal(glb.image(material["normalTexture"]),
                                  np.round(mesh.textures["normal"] * 255).astype(np.uint8))
    spec = material["extensions"]["KHR_materials_specular"]
    f0 = 0.04 * spec["specularColorFactor"][0] * srgb_to_linear(glb.image(spec["specularColorTexture"]) / 255)
    np.testing.assert_allclose(f0, 0.06, atol=2e-3)
    assert SPECULAR_COLOR_FACTOR == 25

    # Normals and tangents are unit length and orthogonal; trimesh reads the same mesh.
    normals, tangents = glb.accessor(attributes["NORMAL"]), glb.accessor(attributes["TANGENT"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.sum(normals * tangents[:, :3], axis=1), 0, atol=1e-6)
    scene = trimesh.load(path, process=False)
    (loaded,) = scene.geometry.values()
    assert loaded.vertices.shape == (45, 3)
    # trimesh converts glTF UVs back to the OBJ convention: the colour lookups agree with OBJ's.
    image = loaded.visual.material.baseColorTexture
    obj_top_left = np.flatnonzero((loaded.visual.uv == [0, 1]).all(axis=1))
    top_left_color = trimesh.visual.color.uv_to_color(loaded.visual.uv[obj_top_left], image)[0, :3]
    assert tuple(top_left_color) == (255, 0, 0)

    assert_valid_gltf(path)


def test_glb_vertex_colors_without_uvs(tmp_path):
    rng = np.random.default_rng(2)
    base = tube()
    colors = rng.random((len(base.vertices), 3)).astype(np.float32)
    mesh = TexturedMesh(base.vertices, base.triangles, vertex_colors=colors, roughness=0.7)
    path = write_glb(mesh, tmp_path / "vc.glb")
    glb = Glb.read(path)
    attributes = glb.doc["meshes"][0]["primitives"][0]["attributes"]
    assert set(attributes) == {"POSITION", "NORMAL", "COLOR_0"}
    # glTF vertex colours are linear: written as given, not sRGB-encoded.
    np.testing.assert_array_equal(glb.accessor(attributes["COLOR_0"]), colors)
    np.testing.assert_allclose(glb.accessor(attributes["POSITION"]), base.vertices / 1000, atol=1e-7)
    assert glb.doc["materials"][0]["pbrMetallicRoughness"]["roughnessFactor"] == pytest.approx(0.7)
    (loaded,) = trimesh.load(path, process=False).geometry.values()
    np.testing.assert_array_equal(loaded.visual.vertex_attributes["color"], colors)
    assert_valid_gltf(path)


def test_glb_with_albedo_drops_vertex_colors_and_validator_catches_errors(tmp_path):
    base = tube(albedo=corner_texture())
    mesh = TexturedMesh(base.vertices, base.triangles, base.uvs, base.uv_triangles,
                        vertex_colors=np.ones((40, 3)), textures=base.textures)
    path = write_glb(mesh, tmp_path / "a.glb")
    glb = Glb.read(path)
    assert "COLOR_0" not in glb.doc["meshes"][0]["primitives"][0]["attributes"]
    assert "TANGENT" not in glb.doc["meshes"][0]["primitives"][0]["attributes"]  # no normal map
    assert_valid_gltf(path)
    # The validator is not a rubber stamp: a wrong POSITION bound is an error.
    glb.doc["accessors"][glb.doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["max"][0] += 1.0
    text = json.dumps(glb.doc).encode()
    text += b" " * (-len(text) % 4)
    data = b"".join([struct.pack("<4sII", b"glTF", 2, 28 + len(text) + len(glb.binary)),
                     struct.pack("<I4s", len(text), b"JSON"), text,
                     struct.pack("<I4s", len(glb.binary), b"BIN\x00"), glb.binary])
    broken = write_bytes(data, tmp_path / "broken.glb")
    code, report = run_validator(broken)
    assert code == 1 and report["issues"]["numErrors"] >= 1
    assert "ACCESSOR_MAX_MISMATCH" in {m["code"] for m in report["issues"]["messages"]}


# ---------------------------------------------------------------------------------------- PLY
def test_ply_vertex_colors_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    base = tube()
    colors = rng.random((40, 3)).astype(np.float32)
    mesh = TexturedMesh(base.vertices, base.triangles, vertex_colors=colors)
    loaded = trimesh.load(write_ply(mesh, tmp_path / "vc.ply"), process=False)
    np.testing.assert_array_equal(loaded.vertices, mesh.vertices)
    np.testing.assert_array_equal(loaded.faces, mesh.triangles)
    # PLY colours are display colours: sRGB-encoded bytes.
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], expected_pixels(colors))
    normals = vertex_normals(mesh.vertices, mesh.triangles)
    np.testing.assert_allclose(loaded.vertex_normals, normals, atol=1e-6)


def test_ply_bakes_the_albedo_texture(tmp_path):
    mesh = tube(albedo=corner_texture())
    loaded = trimesh.load(write_ply(mesh, tmp_path / "t.ply"), process=False)
    assert loaded.vertices.shape == (40, 3)  # PLY keeps the unsplit vertices
    baked = vertex_colors_from_texture(mesh)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], expected_pixels(baked))
    assert tuple(loaded.visual.vertex_colors[20, :3]) == tuple(expected_pixels(np.array(GREY)))
    # Without any colour the PLY has no colour properties.
    plain = write_ply(TexturedMesh(mesh.vertices, mesh.triangles), tmp_path / "p.ply")
    assert b"red" not in plain.read_bytes().split(b"end_header")[0]


# ---------------------------------------------------------------------------------------- API
def test_write_mesh_dispatches_on_suffix(tmp_path):
    mesh = tube(albedo=corner_texture())
    assert [p.name for p in write_mesh(mesh, tmp_path / "m.obj")] == ["m.obj", "m.mtl", "albedo.png"]
    assert write_mesh(mesh, tmp_path / "m.glb") == [tmp_path / "m.glb"]
    assert write_mesh(mesh, tmp_path / "m.PLY") == [tmp_path / "m.PLY"]
    with pytest.raises(ExportError, match=r"m\.stl.*unknown mesh format"):
        write_mesh(mesh, tmp_path / "m.stl")
    assert_valid_gltf(tmp_path / "m.glb")


@pytest.mark.parametrize("change, problem", [
    (dict(vertices=np.zeros((4, 2))), "vertices has shape"),
    (dict(triangles=np.array([[0, 1, 99]])), "triangles index outside"),
    (dict(triangles=np.zeros((0, 3), int)), "no triangles"),
    (dict(vertices=np.full((40, 3), np.nan)), "NaN"),
    (dict(uvs=None), "given together"),
    (dict(textures={"diffuse": np.zeros((2, 2, 3))}), "unknown texture 'diffuse'"),
    (dict(textures={"roughness": np.zeros((2, 2, 3))}), "texture 'roughness' has shape"),
    (dict(textures={"albedo": np.zeros((2, 2, 3), np.int16)}), "dtype"),
    (dict(vertex_colors=np.zeros((3, 3))), "vertex_colors has shape"),
    (dict(name="my face"), "name"),
    (dict(normals=np.zeros((40, 3))), "zero vectors"),
    (dict(roughness=1.5), "roughness"),
])
def test_bad_meshes_raise_a_typed_error(change, problem):
    base = tube()
    fields = dict(vertices=base.vertices, triangles=base.triangles, uvs=base.uvs,
                  uv_triangles=base.uv_triangles)
    fields.update(change)
    with pytest.raises(ExportError, match=problem) as info:
        TexturedMesh(**fields)
    assert isinstance(info.value, Facenet3DError)


def test_textures_need_uvs():
    base = tube()
    with pytest.raises(ExportError, match="need uvs"):
        TexturedMesh(base.vertices, base.triangles, textures={"albedo": corner_texture()})


def small_face_model(albedo_space: str):
    """A 40-vertex face model (the tube) with 2 identity modes and an albedo space."""
    from facenet3d.facemodel import FaceModelArrays, MorphableModel

    base = tube()
    rng = np.random.default_rng(4)
    v = len(base.vertices)
    uv = albedo_space == "uv"
    albedo = corner_texture(8) if uv else rng.random((v, 3)).astype(np.float32)
    arrays = FaceModelArrays(
        mean_shape=base.vertices, triangles=base.triangles,
        identity_basis=rng.normal(0, 1, (2, v, 3)).astype(np.float32),
        expression_basis=np.zeros((0, v, 3), np.float32), landmarks68=np.full(68, -1),
        uvs=base.uvs, uv_triangles=base.uv_triangles, albedo_space=albedo_space,
        albedo_mean=albedo, albedo_basis=rng.normal(0, 0.01, (3, *albedo.shape)).astype(np.float32),
        specular_mean=np.full(albedo.shape, 0.05, np.float32), roughness_mean=np.array([0.35], np.float32),
    )
    return MorphableModel(arrays)


def test_mesh_from_uv_face_model(tmp_path):
    import torch

    model = small_face_model("uv")
    identity = torch.tensor([[1.0, -0.5]])
    verts = model.decode(identity=identity)
    albedo = model.albedo(torch.tensor([[1.0, 0.0, 2.0]]))
    mesh = mesh_from_face_model(model, verts, albedo=albedo)
    np.testing.assert_allclose(mesh.vertices, verts[0].numpy())
    np.testing.assert_array_equal(mesh.uv_triangles, model.uv_triangles.numpy())
    np.testing.assert_allclose(mesh.textures["albedo"], albedo[0].numpy())
    np.testing.assert_allclose(mesh.textures["specular"], 0.05)  # the model's mean specular
    assert mesh.roughness == pytest.approx(0.35) and "roughness" not in mesh.textures
    assert mesh.vertex_colors is None
    path = write_glb(mesh, tmp_path / "face.glb")
    assert_valid_gltf(path)


def test_mesh_from_vertex_face_model_gives_vertex_colors(tmp_path):
    model = small_face_model("vertex")
    mesh = mesh_from_face_model(model, model.mean_shape)
    np.testing.assert_allclose(mesh.vertex_colors, np.clip(model.albedo_mean.numpy(), 0, 1))
    assert mesh.textures == {}  # per-vertex specular has no place in the formats
    obj = trimesh.load(write_obj(mesh, tmp_path / "v.obj")[0], process=False)
    # trimesh splits the seam; find each loaded vertex's original by position.
    original = np.argmin(np.linalg.norm(obj.vertices[:, None] - mesh.vertices[None], axis=2), axis=1)
    assert set(original) == set(range(len(mesh.vertices)))
    # OBJ vertex colours are display colours: sRGB, written with 6 decimals.
    srgb = expected_pixels(mesh.vertex_colors) / 255.0
    np.testing.assert_allclose(obj.vertex_attributes["color"], srgb[original], atol=0.5 / 255)
    assert_valid_gltf(write_glb(mesh, tmp_path / "v.glb"))


def test_export_package_does_not_import_torch():
    # The torch-free runtime (infer/) writes its results with this package.
    code = "import sys, facenet3d.export; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------------- a real face
def test_export_ict_face_region(ict_dir, tmp_path):
    """ICT-FaceKit's face region (9,409 vertices, UV seams) through every format."""
    from facenet3d.facemodel import load_face_model

    model = load_face_model(f"ict:{ict_dir}", region="face")
    h = 64
    ys, xs = np.mgrid[0:h, 0:h]
    # A linear albedo whose red channel is u and green channel is (OBJ) v of each texel centre.
    albedo = np.dstack([(xs + 0.5) / h, 1 - (ys + 0.5) / h, np.zeros((h, h))]).astype(np.float32)
    mesh = mesh_from_face_model(model, model.decode(), albedo=albedo)
    split = split_uv_seams(mesh.triangles, mesh.uv_triangles)

    glb_path = write_glb(mesh, tmp_path / "face.glb")
    assert_valid_gltf(glb_path)
    glb = Glb.read(glb_path)
    attributes = glb.doc["meshes"][0]["primitives"][0]["attributes"]
    positions = glb.accessor(attributes["POSITION"])
    assert len(positions) == len(split.vertex_index) > model.num_vertices
    np.testing.assert_allclose(positions, model.mean_shape.numpy()[split.vertex_index] / 1000, atol=1e-6)
    # The face looks down +z, as glTF viewers expect the front of an asset: normals face +z.
    normals = glb.accessor(attributes["NORMAL"])
    assert normals[:, 2].mean() > 0.3  # the region wraps round to the ears
    assert normals[np.argmax(positions[:, 2]), 2] > 0.9  # the nose tip

    obj = trimesh.load(write_obj(mesh, tmp_path / "face.obj")[0], process=False)
    assert obj.vertices.shape == (len(split.vertex_index), 3)
    assert obj.faces.shape == mesh.triangles.shape

    # PLY colours: the albedo baked at each vertex; away from seams and borders, the red
    # channel is the sRGB encoding of the vertex's u.
    ply = trimesh.load(write_ply(mesh, tmp_path / "face.ply"), process=False)
    assert ply.vertices.shape == mesh.vertices.shape
    uv_per_vertex = np.zeros((model.num_vertices, 2))
    uv_per_vertex[split.vertex_index] = mesh.uvs[split.uv_index]
    single = np.bincount(split.vertex_index, minlength=model.num_vertices) == 1
    inside = ((uv_per_vertex > 0.5 / h) & (uv_per_vertex < 1 - 0.5 / h)).all(axis=1)
    chosen = single & inside
    assert chosen.sum() > 0.9 * model.num_vertices
    red = ply.visual.vertex_colors[chosen, 0].astype(int)
    np.testing.assert_allclose(red, expected_pixels(uv_per_vertex[chosen, 0]), atol=1)
