"""The ICT-FaceKit head as a complete, animatable asset: GLB morph targets named by ARKit, parts, OBJ, PLY.

The head is built as the shipped model will be: the full ICT-FaceKit model with ``triangles``
restricted to the skin (face + head and neck) and the eyes, teeth, gums, mouth and eye sockets
as separate ``parts`` (triangles inside their vertex ranges), through ``FaceModelArrays``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import trimesh
from gltf_validation import assert_valid_gltf
from test_export import Glb, corner_texture, expected_pixels, tube

from facenet3d.camera_math import ImageCamera
from facenet3d.errors import ExportError
from facenet3d.export import (
    MeshPart,
    TexturedMesh,
    mesh_from_face_model,
    part_material,
    split_uv_seams,
    surface_normals,
    vertex_colors_from_texture,
    write_glb,
    write_json,
    write_obj,
    write_ply,
)
from facenet3d.export.gltf import METRES_PER_MM
from facenet3d.export.records import expression_by_name, params_record

#: The parts the shipped head will have (names as in ICT-FaceKit's README).
HEAD_PARTS = ("sclera_left", "iris_left", "sclera_right", "iris_right", "teeth", "gums_tongue", "mouth_socket",
              "eye_socket_left", "eye_socket_right")


@pytest.fixture(scope="module")
def head(ict_dir):
    """The ICT head model as it will ship: skin triangles, parts separate."""
    import torch  # noqa: F401  (MorphableModel)

    from facenet3d.facemodel import MorphableModel, load_face_model
    from facenet3d.facemodel.loaders.ict import ICT_PARTS

    arrays = load_face_model(f"ict:{ict_dir}").to_arrays()
    tri = arrays.triangles
    skin = arrays.regions["skin"][tri].all(axis=1)
    parts = {}
    for name in HEAD_PARTS:
        first, last = ICT_PARTS[name]
        parts[name] = tri[((tri >= first) & (tri <= last)).all(axis=1)]
    return MorphableModel(dataclasses.replace(arrays, triangles=tri[skin], uv_triangles=arrays.uv_triangles[skin],
                                              parts=parts))


@dataclasses.dataclass
class Reconstruction:
    identity: np.ndarray  # (1, 100)
    expression: np.ndarray  # (1, 53)
    vertices: np.ndarray  # (V, 3) mm, identity + expression
    neutral: np.ndarray  # (V, 3) mm, identity only
    used: np.ndarray  # model vertex of each mesh vertex
    mesh: TexturedMesh


@pytest.fixture(scope="module")
def rec(head):
    import torch

    rng = np.random.default_rng(7)
    alpha = torch.tensor(rng.normal(0.0, 1.0, (1, head.identity_dim)), dtype=torch.float32)
    beta = torch.tensor(rng.uniform(0.0, 1.0, (1, head.expression_dim)), dtype=torch.float32)
    beta[0, head.expression_names.index("jawOpen")] = 0.8
    with torch.no_grad():
        verts, neutral = head.decode(alpha, beta)[0].numpy(), head.decode(alpha)[0].numpy()
    mesh = mesh_from_face_model(head, verts, albedo=corner_texture(32), expression=beta)
    used = np.unique(np.concatenate([head.triangles.numpy().reshape(-1),
                                     *(head.part(n).numpy().reshape(-1) for n in head.part_names)]))
    return Reconstruction(alpha.numpy(), beta.numpy(), verts, neutral, used, mesh)


def accessor_values(glb: Glb, index: int) -> np.ndarray:
    """An accessor's values, with glTF's rules for accessors without data (zeros) and sparse ones."""
    a = glb.doc["accessors"][index]
    cols = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
    if "bufferView" in a:
        values = glb.accessor(index).astype(np.float64)
    else:
        values = np.zeros((a["count"], cols))
    if "sparse" in a:
        s = a["sparse"]
        dtype = {5121: "<u1", 5123: "<u2", 5125: "<u4"}[s["indices"]["componentType"]]
        rows = np.frombuffer(glb.view(s["indices"]["bufferView"]), dtype=dtype)[:s["count"]]
        assert (np.diff(rows.astype(np.int64)) > 0).all()  # glTF: strictly increasing
        values[rows] = np.frombuffer(glb.view(s["values"]["bufferView"]), "<f4").reshape(-1, cols)[:s["count"]]
    return values


def primitive_vertices(mesh: TexturedMesh) -> list[np.ndarray]:
    """The mesh vertex of each glTF vertex, per primitive: the seam-split skin, then each part's own."""
    skin = split_uv_seams(mesh.triangles, mesh.uv_triangles).vertex_index
    return [skin, *(np.unique(p.triangles) for p in mesh.parts)]


# ---------------------------------------------------------------------------------------- GLB
def test_head_glb_has_53_arkit_targets_and_flat_part_materials(head, rec, tmp_path):
    path = write_glb(rec.mesh, tmp_path / "head.glb")
    assert_valid_gltf(path)
    glb = Glb.read(path)
    gltf_mesh = glb.doc["meshes"][0]
    names = gltf_mesh["extras"]["targetNames"]
    assert names == head.expression_names and len(names) == 53
    assert {"jawOpen", "mouthSmile_L", "browInnerUp_L", "eyeBlink_R"} <= set(names)
    np.testing.assert_allclose(gltf_mesh["weights"], rec.expression[0], atol=1e-7)
    primitives = gltf_mesh["primitives"]
    assert len(primitives) == 1 + len(HEAD_PARTS)
    assert all(len(p["targets"]) == 53 for p in primitives)  # glTF: the same targets in every primitive
    materials = [glb.doc["materials"][p["material"]] for p in primitives]
    assert "baseColorTexture" in materials[0]["pbrMetallicRoughness"]  # the skin keeps its UV albedo
    assert [m["name"] for m in materials[1:]] == sorted(HEAD_PARTS)
    color = {m["name"]: np.array(m["pbrMetallicRoughness"]["baseColorFactor"][:3]) for m in materials[1:]}
    np.testing.assert_allclose(color["teeth"], part_material("teeth").color, atol=1e-6)
    assert color["sclera_left"].min() > 0.6 > 0.1 > color["iris_left"].max()  # white eyes, dark irises
    assert color["gums_tongue"][0] > 2 * color["gums_tongue"][1]  # pink-red
    # Every storage of a target occurs: eyeballs never move (no data), the teeth move under a few
    # targets (sparse), the skin under most (dense where sparse would be larger).
    target_accessors = [glb.doc["accessors"][t["POSITION"]] for p in primitives for t in p["targets"]]
    assert any("bufferView" not in a and "sparse" not in a for a in target_accessors)
    assert any("sparse" in a for a in target_accessors)
    assert any("bufferView" in a for a in target_accessors)
    print(f"ICT head GLB: {path.stat().st_size / 1e6:.2f} MB")


def test_head_glb_base_is_neutral_and_weighted_targets_give_the_reconstruction(rec, tmp_path):
    glb = Glb.read(write_glb(rec.mesh, tmp_path / "head.glb"))
    gltf_mesh = glb.doc["meshes"][0]
    weights = np.array(gltf_mesh["weights"])
    np.testing.assert_allclose(rec.mesh.vertices, rec.vertices[rec.used], atol=1e-6)
    jaw = gltf_mesh["extras"]["targetNames"].index("jawOpen")
    for primitive, index in zip(gltf_mesh["primitives"], primitive_vertices(rec.mesh), strict=True):
        base = accessor_values(glb, primitive["attributes"]["POSITION"])
        targets = np.stack([accessor_values(glb, t["POSITION"]) for t in primitive["targets"]])
        # The base is the neutral face of the identity, in metres ...
        np.testing.assert_allclose(base, rec.neutral[rec.used][index] * METRES_PER_MM, atol=1e-7)
        # ... and the weights the asset opens with reproduce the reconstruction to 1e-4 mm.
        shown = base + np.tensordot(weights, targets, axes=1)
        np.testing.assert_allclose(shown, rec.vertices[rec.used][index] * METRES_PER_MM, atol=1e-7)
        # jawOpen lowers the chin and the lower teeth by centimetres.
        if primitive is gltf_mesh["primitives"][0] or glb.doc["materials"][primitive["material"]]["name"] == "teeth":
            assert -targets[jaw, :, 1].min() > 0.02


# ---------------------------------------------------------------------------------------- OBJ / PLY
def test_head_obj_has_skin_uvs_and_part_groups(rec, tmp_path):
    written = write_obj(rec.mesh, tmp_path / "head.obj")
    assert [p.name for p in written] == ["head.obj", "head.mtl", "albedo.png"]
    scene = trimesh.load(written[0], process=False)
    assert set(scene.geometry) == {"face", *HEAD_PARTS}
    skin = scene.geometry["face"]
    split = split_uv_seams(rec.mesh.triangles, rec.mesh.uv_triangles)
    assert skin.faces.shape == rec.mesh.triangles.shape and skin.visual.uv.shape == (len(split.vertex_index), 2)
    # trimesh splits the seams: every (position, uv) pair of the skin comes back.
    expected = np.concatenate([rec.mesh.vertices[split.vertex_index], rec.mesh.uvs[split.uv_index]], axis=1)
    loaded = np.concatenate([skin.vertices, skin.visual.uv], axis=1)
    np.testing.assert_allclose(np.unique(loaded.round(4), axis=0), np.unique(expected.round(4), axis=0), atol=1e-4)
    for part in rec.mesh.parts:
        group = scene.geometry[part.name]
        assert group.faces.shape == part.triangles.shape
        np.testing.assert_allclose(group.vertices, rec.mesh.vertices[np.unique(part.triangles)], atol=1e-4)
        assert group.visual.material.name == part.name
    mtl = written[1].read_text()
    assert "newmtl teeth\nKd {:.6f} {:.6f} {:.6f}".format(*part_material("teeth").color) in mtl

    # The project's own reader sees every triangle (skin first, then the parts in order).
    from facenet3d.facemodel.loaders.obj import read_obj_mesh

    obj = read_obj_mesh(written[0])
    np.testing.assert_array_equal(obj.triangles, np.concatenate([rec.mesh.triangles,
                                                                 *(p.triangles for p in rec.mesh.parts)]))
    print(f"ICT head OBJ: {written[0].stat().st_size / 1e6:.2f} MB + MTL + {written[2].stat().st_size} B PNG")


def test_head_ply_has_every_vertex_and_part_colours(rec, tmp_path):
    ply = trimesh.load(write_ply(rec.mesh, tmp_path / "head.ply"), process=False)
    assert len(ply.vertices) == len(rec.used) > 24000  # skin and every part
    np.testing.assert_array_equal(ply.vertices, rec.vertices[rec.used])
    every_triangle = np.concatenate([rec.mesh.triangles, *(p.triangles for p in rec.mesh.parts)])
    np.testing.assert_array_equal(ply.faces, every_triangle)
    colors = ply.visual.vertex_colors[:, :3]
    skin_vertices = np.unique(rec.mesh.triangles)
    np.testing.assert_array_equal(colors[skin_vertices],
                                  expected_pixels(vertex_colors_from_texture(rec.mesh)[skin_vertices]))
    for part in rec.mesh.parts:
        assert (colors[np.unique(part.triangles)] == expected_pixels(part.color)).all()
    # Normals: each part's own, not the fallback of vertices outside the skin.
    teeth = next(p for p in rec.mesh.parts if p.name == "teeth")
    np.testing.assert_allclose(ply.vertex_normals[np.unique(teeth.triangles)],
                               surface_normals(rec.mesh.vertices, teeth.triangles)[np.unique(teeth.triangles)],
                               atol=1e-6)


def test_head_without_parts_or_targets(head, rec, tmp_path):
    mesh = mesh_from_face_model(head, rec.vertices, albedo=corner_texture(32), expression=rec.expression,
                                include_parts=False, morph_targets=False)
    assert mesh.parts == [] and not mesh.has_morph_targets
    # Vertices no written triangle uses are dropped: the skin is ICT's first 11,248 vertices.
    np.testing.assert_array_equal(mesh.vertices, rec.vertices[:11248])
    path = write_glb(mesh, tmp_path / "skin.glb")
    assert_valid_gltf(path)
    gltf_mesh = Glb.read(path).doc["meshes"][0]
    assert len(gltf_mesh["primitives"]) == 1 and "targets" not in gltf_mesh["primitives"][0]
    assert "weights" not in gltf_mesh and "extras" not in gltf_mesh
    written = write_obj(mesh, tmp_path / "skin.obj")
    assert "\no " not in written[0].read_text().split("\no face\n", 1)[1]  # one object only


def test_plain_arrays_give_the_same_head_as_the_model(head, rec):
    """The torch-free runtime passes ``FaceModelArrays`` (parts dict, ``(Ke, V, 3)`` modes)."""
    mesh = mesh_from_face_model(head.to_arrays(), rec.vertices, albedo=corner_texture(32), expression=rec.expression)
    assert [p.name for p in mesh.parts] == [p.name for p in rec.mesh.parts] == sorted(HEAD_PARTS)
    for got, expected in zip(mesh.parts, rec.mesh.parts, strict=True):
        np.testing.assert_array_equal(got.triangles, expected.triangles)
    np.testing.assert_array_equal(mesh.vertices, rec.mesh.vertices)
    np.testing.assert_array_equal(mesh.morph_targets, rec.mesh.morph_targets)
    assert mesh.morph_names == rec.mesh.morph_names and np.array_equal(mesh.morph_weights, rec.mesh.morph_weights)


# ---------------------------------------------------------------------------------------- params.json
def test_params_json_names_the_expressions(head, rec, tmp_path):
    params = {"identity": rec.identity[0], "expression": rec.expression[0], "albedo": np.zeros(0),
              "rotation": np.array([1.0, 0, 0, 0, 1, 0]), "translation": np.array([0.0, 0, -500]),
              "sh": np.zeros((9, 3)), "specular": np.array([1.0]), "roughness": np.array([0.5])}
    record = params_record(params, rotation=np.eye(3), translation=np.array([0.0, 0, -500]),
                           camera=ImageCamera((1000.0, 1000.0), (320.0, 240.0), (480, 640)), crop_size=224,
                           crop_forward=np.array([[1.0, 0, 0], [0, 1, 0]]), detection_box=np.array([0, 0, 9, 9]),
                           detection_score=0.9, refine="fast", seconds={}, model_name="ict",
                           expression_names=head.expression_names)
    loaded = json.loads(write_json(record, tmp_path / "params.json").read_text())
    named = loaded["expression_by_name"]
    assert list(named) == head.expression_names
    assert named["jawOpen"] == pytest.approx(0.8, abs=1e-6)
    assert [named[n] for n in head.expression_names] == pytest.approx(loaded["expression"])
    # Without names (models whose modes are PCA components) there is no such dict.
    assert "expression_by_name" not in params_record(
        params, rotation=np.eye(3), translation=np.zeros(3), camera=ImageCamera((1.0, 1.0), (0.0, 0.0), (1, 1)),
        crop_size=224, crop_forward=np.eye(2, 3), detection_box=np.zeros(4), detection_score=1.0, refine="none",
        seconds={})


def test_expression_by_name_pads_missing_trailing_coefficients():
    assert expression_by_name(np.array([0.5, 0.25]), ["a", "b", "c"]) == {"a": 0.5, "b": 0.25, "c": 0.0}
    with pytest.raises(ValueError, match="3 expression coefficients for 2"):
        expression_by_name(np.ones(3), ["a", "b"])


# ---------------------------------------------------------------------------------------- small meshes
def test_part_materials_by_kind():
    sclera, iris = part_material("sclera_left"), part_material("iris_left")
    assert part_material("eyeball_right") == sclera and part_material("Eyeball_Iris") == iris
    assert part_material("eye_socket_left") == part_material("socket_r") != part_material("mouth_socket")
    assert part_material("gums_tongue") == part_material("tongue") == part_material("upper_gums")
    assert part_material("teeth") == part_material("lower_tooth")
    assert part_material("something_else").color == pytest.approx(part_material("hat").color)
    assert sum(sclera.color) > 2.0 and sum(iris.color) < 0.3 and sum(part_material("eye_socket_left").color) < 0.1


def test_sparse_and_morph_normal_targets_of_a_small_mesh(tmp_path):
    """A tube with two targets: one moves 3 of 40 vertices (sparse), one bends it all (dense)."""
    base = tube()
    v = len(base.vertices)
    targets = np.zeros((2, v, 3), np.float32)
    targets[0, [3, 11, 19], 2] = [5.0, -2.0, 1e-7]  # the last one is below MORPH_EPSILON_MM
    targets[1, :, 0] = 0.01 * (base.vertices[:, 1] + 60.0) ** 2
    weights = np.array([0.5, 1.0], np.float32)
    shown = base.vertices + np.tensordot(weights, targets, axes=1)
    mesh = TexturedMesh(shown, base.triangles, base.uvs, base.uv_triangles, morph_targets=targets,
                        morph_names=["poke", "bend"], morph_weights=weights)
    path = write_glb(mesh, tmp_path / "t.glb", morph_normals=True)
    assert_valid_gltf(path)
    glb = Glb.read(path)
    primitive = glb.doc["meshes"][0]["primitives"][0]
    index = split_uv_seams(base.triangles, base.uv_triangles).vertex_index
    poke, bend = primitive["targets"]
    assert glb.doc["accessors"][poke["POSITION"]]["sparse"]["count"] == np.isin(index, [3, 11]).sum()
    assert "sparse" not in glb.doc["accessors"][bend["POSITION"]]
    np.testing.assert_allclose(accessor_values(glb, poke["POSITION"]),
                               np.where(np.isin(index, [3, 11])[:, None], targets[0][index], 0) / 1000, atol=1e-9)
    # NORMAL offsets: the normals of base + target minus the base's.
    normals = surface_normals(base.vertices, base.triangles)
    bent = surface_normals(base.vertices + targets[1], base.triangles)
    np.testing.assert_allclose(accessor_values(glb, bend["NORMAL"]), (bent - normals)[index], atol=1e-6)
    np.testing.assert_allclose(accessor_values(glb, primitive["attributes"]["NORMAL"]), normals[index], atol=1e-6)


def test_parts_and_targets_are_checked():
    base = tube()
    with pytest.raises(ExportError, match="part 'lid' indexes a vertex outside"):
        TexturedMesh(base.vertices, base.triangles, parts=[MeshPart("lid", [[0, 1, 99]])])
    with pytest.raises(ExportError, match="unique"):
        TexturedMesh(base.vertices, base.triangles, parts=[MeshPart("face", [[0, 1, 2]])])
    with pytest.raises(ExportError, match="name must be"):
        MeshPart("left eye", [[0, 1, 2]])
    with pytest.raises(ExportError, match=r"morph_targets has shape \(1, 3, 3\)"):
        TexturedMesh(base.vertices, base.triangles, morph_targets=np.zeros((1, 3, 3)), morph_names=["a"])
    with pytest.raises(ExportError, match="2 unique non-empty names"):
        TexturedMesh(base.vertices, base.triangles, morph_targets=np.zeros((2, 40, 3)), morph_names=["a", "a"])
