"""ONNX export: one valid graph with a dynamic batch and metadata, equal to the torch path on real photos."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from facenet3d.infer.pipeline import crops_to_input
from onnx_fixtures import aligned_crops, perturbed_regressor, real_photos

from facenet3d.camera_math import matrix_to_euler, rotation_6d_to_matrix
from facenet3d.cli import main
from facenet3d.decode import crop_camera, decode_face
from facenet3d.errors import WeightsError
from facenet3d.export.mesh import TexturedMesh, vertex_colors_from_texture
from facenet3d.facemodel import read_face_model_arrays
from facenet3d.facemodel.registry import shipped_model_path
from facenet3d.network import face_model_fingerprint, get_variant, read_regressor_metadata, save_regressor
from facenet3d.network.weights import face_model_for
from facenet3d.onnx import OUTPUT_NAMES, PARAM_OUTPUTS, OnnxModelInfo, export_onnx
from facenet3d.onnx.metadata import face_model_fingerprint as numpy_fingerprint
from facenet3d.render import euler_to_matrix
from facenet3d.render import matrix_to_euler as torch_matrix_to_euler
from facenet3d.render import rotation_6d_to_matrix as torch_rotation_6d_to_matrix


@pytest.fixture(scope="module")
def model():
    return face_model_for("fast")  # the face model of the fast regressor (v1: small and quick to test)


@pytest.fixture(scope="module")
def crops(faces_dir):
    return aligned_crops(real_photos(faces_dir, 4), get_variant("resnet18").crop_size)[0]


@pytest.fixture(scope="module")
def regressor(model, crops):
    return perturbed_regressor("resnet18", model, crops)


@pytest.fixture(scope="module")
def exported(regressor, model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "resnet18.onnx"
    export_onnx(regressor, model, path, weights={"source": "test"})
    return path


@pytest.fixture(scope="module")
def session(exported):
    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


def test_graph_passes_the_checker_and_carries_its_metadata(exported, model, regressor):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    props = {p.key: p.value for p in proto.metadata_props}
    info = OnnxModelInfo.from_metadata(props)
    assert info.crop_size == regressor.crop_size == 160
    assert info.face_model == "facenet3d_face_v1"
    assert info.face_model_fingerprint == face_model_fingerprint(model)
    assert info.dims == (30, 20, 40) and info.num_vertices == 7305 and info.albedo_space == "uv"
    assert info.mean == regressor.info.mean and info.std == regressor.info.std
    assert info.regressor["backbone"] == "resnet18" and info.weights == {"source": "test"}
    assert props["crop_size"] == "160" and "mean=" in props["normalisation"] and props["facenet3d_version"]
    record = json.loads(props["facenet3d"])
    assert record["input"]["range"] == [0.0, 1.0] and set(record["outputs"]) == set(OUTPUT_NAMES)
    # One input with a symbolic batch and the crop size; every output batched the same way.
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 160, 160]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert all(o.type.tensor_type.shape.dim[0].dim_param == "batch" for o in proto.graph.output)


def test_onnx_equals_torch_on_real_photos(session, regressor, model, crops):
    """Vertices within 0.01 mm, landmarks within 0.01 px, on aligned crops of real photos."""
    x = crops_to_input(crops)
    got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"image": x}), strict=True))
    with torch.no_grad():
        params = regressor(regressor.prepare_images(crops))
        decoded = decode_face(model, params, crop_camera(regressor.crop_size))
        uv_albedo = model.albedo(params.albedo)
    assert np.abs(got["vertices"] - decoded.vertices_camera.numpy()).max() < 0.01
    assert np.abs(got["vertices_model"] - decoded.vertices.numpy()).max() < 0.01
    assert np.abs(got["landmarks68"] - decoded.landmarks68.numpy()).max() < 0.01
    assert np.abs(got["rotation_matrix"] - decoded.rotation.numpy()).max() < 1e-5
    for name in PARAM_OUTPUTS:
        expected = getattr(params, name).numpy()
        assert np.abs(got[name] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), name
    # Per-vertex albedo = the torch UV albedo map of the same coefficients, baked at the vertices.
    tri, uvs, uvt = model.triangles.numpy(), model.uvs.numpy(), model.uv_triangles.numpy()
    for i in range(len(crops)):
        mesh = TexturedMesh(decoded.vertices[i].numpy(), tri, uvs=uvs, uv_triangles=uvt,
                            textures={"albedo": uv_albedo[i].numpy()})
        baked = np.clip(vertex_colors_from_texture(mesh), 0, 1)
        assert np.abs(got["vertex_albedo"][i] - baked).max() < 1e-4
    # The outputs are not the untrained head's constant: pose, expression and albedo vary.
    ypr = matrix_to_euler(got["rotation_matrix"])
    assert np.abs(ypr).max() > 2.0 and np.ptp(ypr, axis=0).max() > 0.5
    assert np.abs(got["expression"]).max() > 0.05 and np.ptp(got["albedo"], axis=0).max() > 0.01
    # Landmarks lie where the crops put the face.
    lm = got["landmarks68"]
    assert ((lm > 0) & (lm < 160)).all()


def test_batch_is_dynamic(session, crops):
    x = crops_to_input(crops)
    together = session.run(["vertices", "landmarks68"], {"image": x})
    for i in (0, 3):
        alone = session.run(["vertices", "landmarks68"], {"image": x[i:i + 1]})
        assert alone[0].shape == (1, 7305, 3)
        assert np.abs(alone[0][0] - together[0][i]).max() < 1e-3
        assert np.abs(alone[1][0] - together[1][i]).max() < 1e-3
    five = session.run(["landmarks68"], {"image": np.concatenate([x, x[:1]])})[0]
    assert five.shape == (5, 68, 2)


def test_export_command_with_weights_file_and_opset(model, tmp_path):
    reg = perturbed_regressor("tiny", model, seed=3)
    weights = save_regressor(reg, tmp_path / "tiny.safetensors", extra={"steps": 0})
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", "-o", str(out), "--weights", str(weights), "--opset", "18"]) == 0
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == 18
    info = OnnxModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert info.crop_size == 64 and info.opset == 18
    assert info.weights["source"] == str(weights) and info.weights["extra"] == {"steps": 0}
    assert info.weights["tensors_sha256"] == read_regressor_metadata(weights)["tensors_sha256"]
    # Usage errors are reported, not raised.
    missing = str(tmp_path / "missing.safetensors")
    assert main(["export-onnx", "-o", str(tmp_path / "x.onnx"), "--weights", missing]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_regressor_for_another_face_model_is_refused(model, tiny_face_model, tmp_path):
    reg = perturbed_regressor("tiny", model)
    with pytest.raises(WeightsError, match="coefficients|fingerprint"):
        export_onnx(reg, tiny_face_model, tmp_path / "wrong.onnx", verify=False)
    assert not list(tmp_path.iterdir())


def test_metadata_errors_are_typed():
    with pytest.raises(WeightsError, match="without facenet3d metadata"):
        OnnxModelInfo.from_metadata({"producer": "someone"}, "m.onnx")
    with pytest.raises(WeightsError, match="newer"):
        OnnxModelInfo.from_metadata({"facenet3d": json.dumps({"format": "facenet3d-onnx", "format_version": 99})})
    with pytest.raises(WeightsError, match="incomplete"):
        OnnxModelInfo.from_metadata({"facenet3d": json.dumps({"format": "facenet3d-onnx", "format_version": 1})})


def test_numpy_fingerprint_equals_the_torch_one(model, tiny_face_model):
    """The runtime checks face models with a numpy twin of the regressor's fingerprint."""
    v1 = read_face_model_arrays(shipped_model_path("facenet3d_face_v1"))
    assert numpy_fingerprint(v1) == face_model_fingerprint(model)
    assert numpy_fingerprint(tiny_face_model.to_arrays()) == face_model_fingerprint(tiny_face_model)
    assert numpy_fingerprint(tiny_face_model.to_arrays()) != face_model_fingerprint(model)


def test_numpy_rotation_twins_equal_torch():
    g = torch.Generator().manual_seed(0)
    d6 = torch.randn(200, 6, generator=g, dtype=torch.float64)
    assert np.abs(rotation_6d_to_matrix(d6.numpy()) - torch_rotation_6d_to_matrix(d6).numpy()).max() < 1e-12
    angles = torch.cat([(torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([340.0, 170, 340]),
                        torch.tensor([[30.0, 90.0, 0.0], [-20.0, -90.0, 0.0]], dtype=torch.float64)])
    r = euler_to_matrix(angles)
    assert np.abs(matrix_to_euler(r.numpy()) - torch_matrix_to_euler(r).numpy()).max() < 1e-9
