"""The MorphableModel container and the native .npz format, on small hand-built models."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel import (
    FaceModelArrays,
    MorphableModel,
    load_face_model,
    read_face_model_arrays,
    registry,
    save_face_model,
)
from facenet3d.facemodel.model import FORMAT_VERSION

# A closed triangular bipyramid, counter-clockwise seen from outside.
PYRAMID = np.array([[0, 0, 10], [10, 0, 0], [0, 10, 0], [-10, 0, 0], [0, -10, 0], [0, 0, -10]],
                   dtype=np.float64)
PYRAMID_TRIS = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1],
                         [5, 2, 1], [5, 3, 2], [5, 4, 3], [5, 1, 4]], dtype=np.int64)


def toy_arrays(albedo_space: str = "vertex", seed: int = 0) -> FaceModelArrays:
    """A 6-vertex model with every optional part filled."""
    rng = np.random.default_rng(seed)
    v = len(PYRAMID)
    landmarks = np.full(68, -1, dtype=np.int64)
    landmarks[[8, 30, 36, 45]] = [5, 0, 1, 3]
    albedo = {}
    if albedo_space == "vertex":
        albedo = {"albedo_mean": rng.uniform(0.2, 0.8, (v, 3)),
                  "albedo_basis": rng.normal(0, 0.05, (2, v, 3)),
                  "specular_mean": rng.uniform(0, 0.2, (v, 3)),
                  "specular_basis": rng.normal(0, 0.01, (1, v, 3))}
    elif albedo_space == "uv":
        albedo = {"albedo_mean": rng.uniform(0.2, 0.8, (4, 5, 3)),
                  "albedo_basis": rng.normal(0, 0.05, (3, 4, 5, 3)),
                  "roughness_mean": np.full((4, 5, 1), 0.4)}
    return FaceModelArrays(
        mean_shape=PYRAMID.copy(),
        triangles=PYRAMID_TRIS.copy(),
        identity_basis=rng.normal(0, 2.0, (3, v, 3)),
        expression_basis=rng.normal(0, 1.0, (2, v, 3)),
        landmarks68=landmarks,
        identity_std=np.array([1.0, 0.5, 0.25]),
        expression_names=["smile", "jawOpen"],
        uvs=rng.uniform(0, 1, (7, 2)),
        uv_triangles=rng.integers(0, 7, (len(PYRAMID_TRIS), 3)),
        regions={"face": np.array([True, True, True, True, True, False]), "tip": np.eye(v, dtype=bool)[0]},
        albedo_space=albedo_space,
        metadata={"name": "toy", "license": "CC0", "nested": {"a": [1, 2]}},
        **albedo,
    )


@pytest.fixture
def model() -> MorphableModel:
    return MorphableModel(toy_arrays())


# ---------------------------------------------------------------------------------------- decoding
def test_decode_is_mean_plus_bases_in_mm(model: MorphableModel):
    arrays = toy_arrays()
    alpha = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    beta = np.array([[1.0, 0.25], [-0.5, 0.0]])
    verts = model.decode(torch.tensor(alpha, dtype=torch.float32), torch.tensor(beta, dtype=torch.float32))
    expected = (arrays.mean_shape + np.einsum("bk,kvc->bvc", alpha, arrays.identity_basis)
                + np.einsum("bk,kvc->bvc", beta, arrays.expression_basis))
    assert verts.shape == (2, 6, 3) and verts.dtype == torch.float32
    np.testing.assert_allclose(verts.numpy(), expected, atol=1e-5)
    # The model stays in millimetres: the apex of the 10 mm bipyramid is 10 mm up the z axis.
    assert model.decode()[0, 0, 2].item() == pytest.approx(10.0)


def test_missing_coefficients_are_zero_and_fewer_columns_are_padded(model: MorphableModel):
    mean = torch.as_tensor(PYRAMID, dtype=torch.float32)
    assert torch.equal(model.decode(), mean[None])
    only_expr = model.decode(expression=torch.tensor([[1.0, 0.0]]))
    np.testing.assert_allclose(only_expr[0].numpy(), PYRAMID + toy_arrays().expression_basis[0], atol=1e-5)
    short = model.decode(identity=torch.tensor([[0.7]]))
    full = model.decode(identity=torch.tensor([[0.7, 0.0, 0.0]]))
    assert torch.equal(short, full)
    assert not torch.equal(short, model.decode())


def test_bad_coefficients_raise(model: MorphableModel):
    with pytest.raises(ValueError, match="identity coefficients"):
        model.decode(identity=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="batches disagree"):
        model.decode(identity=torch.zeros(2, 3), expression=torch.zeros(3, 2))


def test_batch_and_device(model: MorphableModel):
    alpha = torch.randn(5, 3)
    batch = model.decode(alpha)
    for i in range(5):
        torch.testing.assert_close(batch[i], model.decode(alpha[i:i + 1])[0])
    # Buffers follow .to(): decoding on the meta device only propagates shapes, proving
    # nothing in decode is pinned to the CPU.
    meta = MorphableModel(toy_arrays()).to("meta")
    out = meta.decode(torch.zeros(4, 3, device="meta"), torch.zeros(4, 2, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 6, 3)
    if torch.cuda.is_available():
        cuda = MorphableModel(toy_arrays()).cuda()
        torch.testing.assert_close(cuda.decode(alpha.cuda()).cpu(), batch)


def test_decode_is_differentiable(model: MorphableModel):
    alpha = torch.zeros(1, 3, requires_grad=True)
    model.decode(alpha)[0, 2, 1].backward()  # d(y of vertex 2) / d alpha_k = identity_basis[k, 2, 1]
    np.testing.assert_allclose(alpha.grad[0].numpy(), toy_arrays().identity_basis[:, 2, 1], rtol=1e-6)


def test_vertex_normals_hand_computed():
    # Two triangles hinged on the edge 0-1: one in z=0 (area 1, normal +z), one in y=0
    # (area 0.5, normal +y). Shared vertices get the area-weighted mean (0, 1, 2)/sqrt(5).
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 1]], dtype=np.float64)
    arrays = FaceModelArrays(mean_shape=verts, triangles=np.array([[0, 1, 2], [0, 3, 1]]),
                             identity_basis=np.zeros((0, 4, 3)), expression_basis=np.zeros((0, 4, 3)),
                             landmarks68=np.full(68, -1))
    m = MorphableModel(arrays)
    n = m.vertex_normals(m.decode())[0].numpy()
    hinge = np.array([0, 1, 2]) / np.sqrt(5)
    np.testing.assert_allclose(n, [hinge, hinge, [0, 0, 1], [0, 1, 0]], atol=1e-6)


def test_landmarks_nan_where_absent(model: MorphableModel):
    lm = model.landmarks(model.decode(torch.zeros(2, 3)))
    assert lm.shape == (2, 68, 3)
    np.testing.assert_allclose(lm[0, 30].numpy(), PYRAMID[0])
    np.testing.assert_allclose(lm[1, 8].numpy(), PYRAMID[5])
    assert torch.isnan(lm[:, 0]).all() and (~torch.isnan(lm[:, [8, 30, 36, 45]])).all()


def test_vertex_albedo_and_specular_decode(model: MorphableModel):
    arrays = toy_arrays()
    c = np.array([[1.0, -2.0]])
    expected = arrays.albedo_mean + np.einsum("k,kvc->vc", c[0], arrays.albedo_basis)
    albedo = model.albedo(torch.tensor(c, dtype=torch.float32))
    np.testing.assert_allclose(albedo[0].numpy(), expected, atol=1e-6)
    assert model.albedo().shape == (1, 6, 3)
    np.testing.assert_allclose(model.albedo()[0].numpy(), arrays.albedo_mean, atol=1e-7)
    spec = model.specular(torch.tensor([[3.0]]))
    expected = arrays.specular_mean + 3 * arrays.specular_basis[0]
    np.testing.assert_allclose(spec[0].numpy(), expected, atol=1e-6)
    # Fewer albedo coefficients than modes: the rest are zero.
    torch.testing.assert_close(model.albedo(torch.tensor([[1.0]])), model.albedo(torch.tensor([[1.0, 0.0]])))


def test_uv_albedo_decode():
    arrays = toy_arrays("uv")
    m = MorphableModel(arrays)
    c = torch.tensor([[0.5, 0.0, -1.0], [0.0, 1.0, 0.0]])
    maps = m.albedo(c)
    assert maps.shape == (2, 4, 5, 3)
    expected = arrays.albedo_mean + np.einsum("bk,khwc->bhwc", c.numpy(), arrays.albedo_basis)
    np.testing.assert_allclose(maps.numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="no such space"):
        m.specular()


def test_regions_and_sizes(model: MorphableModel):
    assert model.region("face").tolist() == [True] * 5 + [False]
    with pytest.raises(KeyError, match="no region"):
        model.region("ears")
    assert (model.num_vertices, model.identity_dim, model.expression_dim, model.albedo_dim) == (6, 3, 2, 2)
    assert "vertices=6" in repr(model)


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change, message", [
    ({"triangles": np.array([[0, 1, 6]])}, "triangles index outside"),
    ({"identity_basis": np.zeros((3, 5, 3))}, "identity_basis has shape"),
    ({"mean_shape": np.full((6, 3), np.nan)}, "NaN"),
    ({"landmarks68": np.zeros(67, dtype=np.int64)}, "landmarks68 has shape"),
    ({"landmarks68": np.full(68, 6)}, "landmarks68 index outside"),
    ({"expression_names": ["one"]}, "1 expression names for 2 modes"),
    ({"uvs": None}, "uvs and uv_triangles"),
    ({"triangles": PYRAMID_TRIS.astype(np.float32)}, "triangles has dtype"),
    ({"albedo_space": "texture"}, "albedo_space 'texture'"),
    ({"albedo_basis": np.zeros((2, 5, 3))}, "albedo_basis has shape"),
    ({"regions": {"face": np.ones(5, dtype=bool)}}, "region 'face' has shape"),
])
def test_validation_errors_name_the_source(change, message):
    arrays = replace(toy_arrays(), **change)
    with pytest.raises(FaceModelFormatError, match=message) as info:
        arrays.validate("somewhere/model.npz")
    assert info.value.path == "somewhere/model.npz"
    with pytest.raises(FaceModelFormatError, match=message):
        MorphableModel(arrays)


def test_uv_albedo_needs_uvs():
    arrays = replace(toy_arrays("uv"), uvs=None, uv_triangles=None)
    with pytest.raises(FaceModelFormatError, match="needs uvs"):
        arrays.validate()


# ---------------------------------------------------------------------------------------- native format
def articulated_arrays() -> FaceModelArrays:
    arrays = toy_arrays()
    j = 2
    return replace(arrays, joint_regressor=np.full((j, 6), 1 / 6), parents=np.array([-1, 0]),
                   skinning_weights=np.tile([0.25, 0.75], (6, 1)), pose_basis=np.ones((9, 6, 3)) * 0.01,
                   joint_names=["root", "jaw"])


def assert_arrays_equal(a: FaceModelArrays, b: FaceModelArrays, exact: bool = True) -> None:
    for name in ("mean_shape", "triangles", "identity_basis", "expression_basis", "landmarks68",
                 "identity_std", "expression_std", "uvs", "uv_triangles", "albedo_mean", "albedo_basis",
                 "albedo_std", "specular_mean", "specular_basis", "roughness_mean", "landmarks_mediapipe",
                 "joint_regressor", "parents", "skinning_weights", "pose_basis"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype, name
            if exact:
                assert np.array_equal(x, y), name
    assert a.expression_names == b.expression_names and a.joint_names == b.joint_names
    assert a.albedo_space == b.albedo_space and a.metadata == b.metadata
    assert sorted(a.regions) == sorted(b.regions)
    assert all(np.array_equal(a.regions[k], b.regions[k]) for k in a.regions)


@pytest.mark.parametrize("make", [toy_arrays, lambda: toy_arrays("uv"), articulated_arrays])
def test_native_round_trip_is_bit_exact(tmp_path, make):
    model = MorphableModel(make())
    path = save_face_model(model, tmp_path / "sub" / "model.npz")
    assert [p.name for p in path.parent.iterdir()] == ["model.npz"]  # no temporary file left
    loaded = load_face_model(path)
    assert_arrays_equal(loaded.to_arrays(), model.to_arrays())
    assert loaded.identity_basis.dtype == torch.float32
    for name, buf in model.named_buffers():
        assert torch.equal(buf, dict(loaded.named_buffers())[name]), name
    # Same spec through the explicit format prefix.
    assert torch.equal(load_face_model(f"native:{path}").mean_shape, model.mean_shape)


def test_articulated_model_poses_after_round_trip(tmp_path):
    model = MorphableModel(articulated_arrays())
    loaded = load_face_model(save_face_model(model, tmp_path / "a.npz"))
    pose = torch.tensor([[[0.0, 0.0, 0.0], [0.3, -0.2, 0.1]]])
    posed = loaded.decode(pose=pose)
    assert not torch.allclose(posed, loaded.decode())
    torch.testing.assert_close(posed, model.decode(pose=pose))


def test_float16_bases_within_tolerance(tmp_path):
    model = MorphableModel(toy_arrays())
    full = save_face_model(model, tmp_path / "f32.npz")
    half = save_face_model(model, tmp_path / "f16.npz", half_bases=True)
    with zipfile.ZipFile(half) as z:
        assert "identity_basis.npy" in z.namelist()
    with np.load(half) as raw:
        assert raw["identity_basis"].dtype == np.float16 and raw["mean_shape"].dtype == np.float32
    a, b = read_face_model_arrays(full), read_face_model_arrays(half)
    assert b.identity_basis.dtype == np.float32
    for name in ("identity_basis", "expression_basis", "albedo_basis", "specular_basis"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-3 * np.abs(x).max())
        assert not np.array_equal(x, y) or name == "specular_basis"
    assert np.array_equal(a.mean_shape, b.mean_shape) and np.array_equal(a.triangles, b.triangles)


def test_native_load_errors(tmp_path):
    good = save_face_model(MorphableModel(toy_arrays()), tmp_path / "good.npz")
    data = good.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceModelFormatError, match="truncated.npz: not a readable"):
        load_face_model(truncated)

    text = tmp_path / "notes.npz"
    text.write_text("just some text\n")
    with pytest.raises(FaceModelFormatError, match="notes.npz"):
        load_face_model(text)

    with pytest.raises(FaceModelFormatError, match="file not found"):
        load_face_model(tmp_path / "absent.npz")

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(FaceModelFormatError, match="no 'metadata' entry"):
        load_face_model(foreign)

    def rewrite(name: str, **meta_changes) -> object:
        with np.load(good) as z:
            payload = {k: z[k] for k in z.files}
        meta = json.loads(str(payload["metadata"]))
        meta.update(meta_changes)
        payload["metadata"] = np.array(json.dumps(meta))
        out = tmp_path / name
        np.savez(out, **payload)
        return out

    with pytest.raises(FaceModelFormatError, match="newer than this"):
        load_face_model(rewrite("future.npz", format_version=FORMAT_VERSION + 1))
    with pytest.raises(FaceModelFormatError, match="units are 'm'"):
        load_face_model(rewrite("metres.npz", units="m"))
    with pytest.raises(FaceModelFormatError, match="format is 'other'"):
        load_face_model(rewrite("other.npz", format="other"))


def test_unknown_format_spec(tmp_path):
    with pytest.raises(FaceModelFormatError, match="unknown face-model format 'obj'"):
        load_face_model(f"obj:{tmp_path}/x.obj")


def test_default_model_absent_and_present(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(FaceModelFormatError, match="default face model is not installed") as info:
        load_face_model("default")
    assert info.value.path.endswith(registry.DEFAULT_MODEL_FILE)
    save_face_model(MorphableModel(toy_arrays()), registry.default_model_path())
    assert load_face_model("default").num_vertices == 6
