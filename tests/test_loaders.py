"""Face-model loaders: ICT-FaceKit against its real files, the other formats on small files
written here in their exact public layouts (scipy .mat, HDF5, pickle, cereal binary)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel import MorphableModel, load_face_model
from facenet3d.facemodel.loaders import ict
from facenet3d.facemodel.loaders.obj import read_obj_mesh, read_obj_vertices, triangulate

# A closed bipyramid (mm), counter-clockwise seen from outside, shared by the synthetic files.
OCTA = np.array([[0, 0, 60], [70, 0, 0], [0, 80, 0], [-70, 0, 0], [0, -90, 0], [0, 0, -50]], dtype=np.float64)
OCTA_TRIS = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1],
                      [5, 2, 1], [5, 3, 2], [5, 4, 3], [5, 1, 4]], dtype=np.int64)
V = len(OCTA)


def unit(k: int, dim: int, value: float = 1.0) -> torch.Tensor:
    out = torch.zeros(1, dim)
    out[0, k] = value
    return out


def mode(model: MorphableModel, which: str, k: int) -> np.ndarray:
    """Offset of mode ``k`` at coefficient 1 (decoded, so the whole decode path is exercised)."""
    dim = model.identity_dim if which == "identity" else model.expression_dim
    return (model.decode(**{which: unit(k, dim)}) - model.decode())[0].numpy()


def obj_vertices(path: Path) -> np.ndarray:
    """Independent OBJ reader for the checks: plain Python over the ``v`` lines."""
    with open(path) as f:
        return np.array([line.split()[1:4] for line in f if line.startswith("v ")], dtype=np.float64)


def obj_faces(path: Path) -> list[list[tuple[int, int]]]:
    with open(path) as f:
        return [[tuple(int(i) - 1 for i in corner.split("/")[:2]) for corner in line.split()[1:]]
                for line in f if line.startswith("f ")]


# ================================================================================== ICT-FaceKit
@pytest.fixture(scope="session")
def ict_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ict-cache")


@pytest.fixture(scope="session")
def ict_full(ict_dir: Path, ict_cache: Path) -> MorphableModel:
    """The full model parsed from the original OBJs (written to the test's own cache)."""
    return load_face_model(f"ict:{ict_dir}", cache=ict_cache)


@pytest.fixture(scope="session")
def ict_face(ict_dir: Path, ict_cache: Path, ict_full: MorphableModel) -> MorphableModel:
    return load_face_model(f"ict:{ict_dir}", region="face", cache=ict_cache)


def test_ict_sizes_names_and_units(ict_full: MorphableModel, ict_dir: Path):
    folder = ict_dir / "FaceXModel"
    indices = json.loads((folder / "vertex_indices.json").read_text())
    assert ict_full.num_vertices == 26719
    assert ict_full.identity_dim == 100 and ict_full.expression_dim == 53
    assert ict_full.expression_names == indices["expressions"]
    assert not {"cheekRaiser_L", "PupilDilate_R"} & set(ict_full.expression_names)
    # 548 triangles + 25,836 quads in generic_neutral_mesh.obj.
    assert ict_full.triangles.shape == (548 + 2 * 25836, 3)
    assert ict_full.uvs.shape == (28911, 2) and ict_full.uv_triangles.shape == ict_full.triangles.shape
    assert ict_full.landmarks68.tolist() == indices["idx_to_landmark_verts"]
    # Centimetres -> millimetres: the mean is the neutral OBJ times 10.
    neutral = obj_vertices(folder / "generic_neutral_mesh.obj")
    np.testing.assert_allclose(ict_full.mean_shape.numpy(), neutral * 10, atol=1e-4)
    width = np.ptp(ict_full.mean_shape[:9409, 0].numpy())
    assert 120 < width < 200, f"face width {width} mm"


@pytest.mark.parametrize("k", [0, 1, 37, 99])
def test_ict_identity_mode_reproduces_its_obj(ict_full: MorphableModel, ict_dir: Path, k: int):
    folder = ict_dir / "FaceXModel"
    expected = obj_vertices(folder / f"identity{k:03d}.obj") * 10
    verts = ict_full.decode(identity=unit(k, 100))[0].numpy()
    assert np.abs(verts - expected).max() < 1e-3
    assert np.abs(mode(ict_full, "identity", k)).max() > 0.1  # the mode really moves the face (mm)


@pytest.mark.parametrize("name", ["jawOpen", "eyeBlink_L", "mouthSmile_R", "browInnerUp_R", "noseSneer_L"])
def test_ict_expression_reproduces_its_obj(ict_full: MorphableModel, ict_dir: Path, name: str):
    expected = obj_vertices(ict_dir / "FaceXModel" / f"{name}.obj") * 10
    k = ict_full.expression_names.index(name)
    verts = ict_full.decode(expression=unit(k, 53))[0].numpy()
    assert np.abs(verts - expected).max() < 1e-3


def test_ict_quads_triangulated_with_consistent_winding(ict_full: MorphableModel, ict_dir: Path):
    path = ict_dir / "FaceXModel" / "generic_neutral_mesh.obj"
    faces = obj_faces(path)
    verts = obj_vertices(path)
    obj_uvs = np.array([line.split()[1:3] for line in path.read_text().splitlines()
                        if line.startswith("vt ")], dtype=np.float64)
    tris, uv_tris, uvs = ict_full.triangles.numpy(), ict_full.uv_triangles.numpy(), ict_full.uvs.numpy()
    sizes = np.array([len(f) for f in faces])
    assert set(sizes.tolist()) == {3, 4}
    tri_start = np.concatenate([[0], np.cumsum(sizes - 2)[:-1]])
    assert tri_start[-1] + sizes[-1] - 2 == len(tris)
    against = 0
    for n in (3, 4):
        sel = np.nonzero(sizes == n)[0]
        corner = np.array([faces[i] for i in sel])  # (m, n, 2): vertex, texture index
        # Each polygon is a fan from one of its corners, in the polygon's cyclic order.
        pivot = (corner[:, :, 0] == tris[tri_start[sel], :1]).argmax(axis=1)
        p = verts[corner[:, :, 0]]
        newell = np.cross(p, np.roll(p, -1, axis=1)).sum(axis=1)  # the polygon's normal
        for i in range(n - 2):
            fan = np.take_along_axis(corner, ((pivot[:, None] + [0, i + 1, i + 2]) % n)[:, :, None], axis=1)
            rows = tri_start[sel] + i
            np.testing.assert_array_equal(tris[rows], fan[:, :, 0])
            np.testing.assert_allclose(uvs[uv_tris[rows]], obj_uvs[fan[:, :, 1]], atol=1e-7)
            a, b, c = (verts[tris[rows, k]] for k in range(3))
            against += int((np.einsum("mc,mc->m", np.cross(b - a, c - a), newell) < 0).sum())
    assert against == 0, f"{against} triangles wound against their polygon"
    # Counter-clockwise seen from outside: the normal at the nose tip points out of the face (+z).
    m = ict_full.decode()
    normals = ict_full.vertex_normals(m)[0]
    tip = int(m[0, :9409, 2].argmax())
    assert normals[tip, 2] > 0.95


def test_triangulation_splits_a_concave_quad_at_its_reflex_corner():
    # A dart: corner 3 is reflex, so the fan from corner 0 would give a flipped triangle (0, 2, 3).
    verts = np.array([[0, 0, 0], [2, 0, 0], [2, 2, 0], [1.5, 0.5, 0], [5, 5, 5]], dtype=np.float64)
    corners = np.array([0, 1, 2, 3, 1, 2, 4])
    split, source = triangulate(corners, np.array([4, 3]), verts)
    np.testing.assert_array_equal(corners[split], [[1, 2, 3], [1, 3, 0], [1, 2, 4]])
    np.testing.assert_array_equal(source, [0, 0, 1])
    a, b, c = (verts[corners[split][:2, i]] for i in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).all()  # both halves counter-clockwise like the quad


def test_ict_face_region(ict_face: MorphableModel, ict_full: MorphableModel):
    assert ict_face.num_vertices == 9409
    full_tris = ict_full.triangles.numpy()
    inside = (full_tris < 9409).all(axis=1)
    np.testing.assert_array_equal(ict_face.triangles.numpy(), full_tris[inside])
    face_basis = ict_full.identity_basis.view(100, -1, 3)[:, :9409]
    assert torch.equal(ict_face.identity_basis.view(100, -1, 3), face_basis)
    assert torch.equal(ict_face.landmarks68, ict_full.landmarks68)
    # UVs are compacted but every kept triangle keeps its texture coordinates.
    np.testing.assert_array_equal(ict_face.uvs[ict_face.uv_triangles].numpy(),
                                  ict_full.uvs[ict_full.uv_triangles[torch.from_numpy(inside)]].numpy())
    assert len(ict_face.uvs) < len(ict_full.uvs)
    assert ict_face.region("face").all() and int(ict_face.region("narrow_face").sum()) == 6706
    assert "eyes" not in ict_face.region_names and ict_face.metadata["region"] == "face"


def test_ict_regions(ict_full: MorphableModel):
    counts = {name: int(ict_full.region(name).sum()) for name in ict_full.region_names}
    assert counts["face"] == 9409 and counts["narrow_face"] == 6706 and counts["teeth"] == 4412
    assert counts["eyes"] == 2 * 1570 and counts["mouth"] == 2046 + 2977 + 4412
    assert counts["skin"] == 9409 + 1839 and counts["eyelashes_right"] == 684
    assert bool(ict_full.region("eyeball_left")[21451]) and not bool(ict_full.region("eyeball_left")[21450])
    assert 0 < counts["fitting"] < 26719 and 0 < counts["rigid"] < 26719


def test_ict_cache_is_bit_exact_and_fast(ict_full: MorphableModel, ict_dir: Path, ict_cache: Path):
    assert len(list((ict_cache / "ict").glob("*.npz"))) == 1
    start = time.perf_counter()
    cached = load_face_model(f"ict:{ict_dir}", cache=ict_cache)
    elapsed = time.perf_counter() - start
    for name, buf in ict_full.named_buffers():
        assert torch.equal(buf, dict(cached.named_buffers())[name]), name
    assert cached.expression_names == ict_full.expression_names
    assert elapsed < 5.0, f"cached ICT load took {elapsed:.1f} s"
    # The FaceXModel folder itself is the same model (and the same cache entry).
    inner = load_face_model(f"ict:{ict_dir / 'FaceXModel'}", cache=ict_cache)
    assert torch.equal(inner.identity_basis, ict_full.identity_basis)
    assert len(list((ict_cache / "ict").glob("*.npz"))) == 1


def test_ict_extra_expressions(ict_dir: Path, tmp_path):
    model = load_face_model(f"ict:{ict_dir}", extra_expressions=True, cache=False)
    extra = ["PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R"]
    assert model.expression_dim == 57 and model.expression_names[53:] == extra
    expected = obj_vertices(ict_dir / "FaceXModel" / "cheekRaiser_L.obj") * 10
    assert np.abs(model.decode(expression=unit(55, 57))[0].numpy() - expected).max() < 1e-3


def test_ict_cache_key_follows_file_changes(tmp_path):
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    (folder / "generic_neutral_mesh.obj").write_text("v 0 0 0\n")
    key = ict._cache_file(folder, False, tmp_path / "c")
    assert ict._cache_file(folder, False, tmp_path / "c") == key
    assert ict._cache_file(folder, True, tmp_path / "c") != key
    os.utime(folder / "generic_neutral_mesh.obj", ns=(1, 1))
    assert ict._cache_file(folder, False, tmp_path / "c") != key
    assert ict._cache_file(folder, False, False) is None


def linked_copy(src: Path, dst: Path, skip: tuple[str, ...] = (),
                files: dict[str, bytes] | None = None) -> Path:
    """A cheap copy of an ICT folder: symlinks, minus ``skip``, with ``files`` written instead."""
    (dst / "FaceXModel").mkdir(parents=True)
    for p in (src / "FaceXModel").iterdir():
        if p.name not in skip and p.name not in (files or {}):
            (dst / "FaceXModel" / p.name).symlink_to(p)
    for name, data in (files or {}).items():
        (dst / "FaceXModel" / name).write_bytes(data)
    return dst


def test_ict_missing_expression_obj_is_named(ict_dir: Path, tmp_path):
    folder = linked_copy(ict_dir, tmp_path / "ict", skip=("jawOpen.obj",))
    start = time.perf_counter()
    with pytest.raises(FaceModelFormatError, match=r"jawOpen\.obj: ICT-FaceKit OBJ not found"):
        load_face_model(f"ict:{folder}", cache=False)
    assert time.perf_counter() - start < 2.0  # checked before any parsing


def test_ict_missing_identity_obj_is_named(ict_dir: Path, tmp_path):
    folder = linked_copy(ict_dir, tmp_path / "ict", skip=("identity042.obj",))
    with pytest.raises(FaceModelFormatError, match=r"identity042\.obj: identity mode file not found"):
        load_face_model(f"ict:{folder}", cache=False)


def test_ict_truncated_obj_is_named(ict_dir: Path, tmp_path):
    data = (ict_dir / "FaceXModel" / "identity000.obj").read_bytes()
    cut = data[: data.rfind(b"\n", 0, len(data) // 10)]  # whole lines, a third of the vertices
    folder = linked_copy(ict_dir, tmp_path / "ict", files={"identity000.obj": cut})
    with pytest.raises(FaceModelFormatError, match=r"identity000\.obj: has \d+ vertices"):
        load_face_model(f"ict:{folder}", cache=False)


def test_ict_bad_folder_and_region(tmp_path, ict_dir: Path, ict_cache: Path, ict_full: MorphableModel):
    with pytest.raises(FaceModelFormatError, match="not an ICT-FaceKit folder"):
        load_face_model(f"ict:{tmp_path}")
    with pytest.raises(FaceModelFormatError, match="folder not found"):
        load_face_model(f"ict:{tmp_path / 'nope'}")
    with pytest.raises(FaceModelFormatError, match="unknown region 'ears'"):
        load_face_model(f"ict:{ict_dir}", region="ears", cache=ict_cache)
    broken = linked_copy(ict_dir, tmp_path / "ict", files={"vertex_indices.json": b"{not json"})
    with pytest.raises(FaceModelFormatError, match="vertex_indices.json: not valid JSON"):
        load_face_model(f"ict:{broken}", cache=False)


# ================================================================================== BFM2009
def write_front_mat(path: Path, rng) -> dict:
    """Deep3DFaceRecon's BFM_model_front.mat layout (decimetres, 1-based indices)."""
    data = {
        "meanshape": (OCTA / 100).reshape(1, -1).astype(np.float32),
        "idBase": rng.normal(0, 0.01, (3 * V, 3)).astype(np.float32),
        "exBase": rng.normal(0, 0.01, (3 * V, 2)).astype(np.float32),
        "meantex": rng.uniform(50, 200, (1, 3 * V)).astype(np.float32),
        "texBase": rng.normal(0, 5, (3 * V, 2)).astype(np.float32),
        "tri": (OCTA_TRIS + 1).astype(np.float64),
        "keypoints": (np.arange(68) % V + 1).reshape(1, 68).astype(np.float64),
        "point_buf": np.ones((V, 8)),
        "frontmask2_idx": np.array([[1], [2], [3]], dtype=np.float64),
        "skinmask": np.array([[1, 0, 1, 1, 0, 1]], dtype=np.float64),
    }
    scipy.io.savemat(path, data)
    return data


def test_bfm2009_front(tmp_path):
    data = write_front_mat(tmp_path / "BFM_model_front.mat", np.random.default_rng(1))
    model = load_face_model(f"bfm2009:{tmp_path}")  # a folder finds BFM_model_front.mat
    np.testing.assert_allclose(model.mean_shape.numpy(), OCTA, atol=1e-4)
    alpha = torch.tensor([[0.5, -1.0, 2.0]])
    expected = (data["meanshape"].reshape(-1) + data["idBase"] @ alpha[0].numpy()).reshape(V, 3) * 100
    np.testing.assert_allclose(model.decode(identity=alpha)[0].numpy(), expected, atol=1e-4)
    expected = data["exBase"][:, 1].reshape(V, 3) * 100
    np.testing.assert_allclose(mode(model, "expression", 1), expected, atol=1e-4)
    np.testing.assert_array_equal(model.triangles.numpy(), OCTA_TRIS)  # 0-based, already outward
    np.testing.assert_array_equal(model.landmarks68.numpy(), np.arange(68) % V)
    assert model.albedo_space == "vertex"
    np.testing.assert_allclose(model.albedo()[0].numpy(), data["meantex"].reshape(V, 3) / 255, atol=1e-6)
    np.testing.assert_allclose(model.albedo(torch.tensor([[0.0, 1.0]]))[0].numpy(),
                               (data["meantex"][0] + data["texBase"][:, 1]).reshape(V, 3) / 255, atol=1e-6)
    assert model.region("skin").tolist() == [True, False, True, True, False, True]
    assert model.region("front").tolist() == [True, True, True, False, False, False]
    assert model.metadata["source_units"] == "dm"


def write_original_bfm(folder: Path, rng, with_expressions: bool = True) -> dict:
    """01_MorphableModel.mat (micrometres, clockwise 1-based tl) and Guo's expression files."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "shapeMU": (OCTA * 1000).reshape(-1, 1),
        "shapePC": np.linalg.qr(rng.normal(size=(3 * V, 3)))[0],
        "shapeEV": np.array([[9000.0], [4000.0], [1000.0]]),
        "texMU": rng.uniform(50, 200, (3 * V, 1)),
        "texPC": np.linalg.qr(rng.normal(size=(3 * V, 2)))[0],
        "texEV": np.array([[40.0], [10.0]]),
        "tl": (OCTA_TRIS[:, ::-1] + 1).astype(np.float64),
    }
    scipy.io.savemat(folder / "01_MorphableModel.mat", data)
    if with_expressions:
        trim = np.array([1, 2, 3, 5, 6])  # 1-based; BFM vertex 4 (0-based 3) has no expression motion
        n, k = len(trim), 2
        exp_mean = rng.normal(0, 500, 3 * n).astype(np.float32)
        exp_modes = rng.normal(0, 1, (k, 3 * n)).astype(np.float32)
        (folder / "Exp_Pca.bin").write_bytes(struct.pack("<i", k) + exp_mean.astype("<f4").tobytes()
                                             + exp_modes.astype("<f4").tobytes())
        np.savetxt(folder / "std_exp.txt", [3000.0, 700.0])
        scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": trim.reshape(-1, 1).astype(np.float64)})
        data.update(trim=trim - 1, exp_modes=exp_modes.reshape(k, n, 3), exp_std=np.array([3000.0, 700.0]))
    return data


def test_bfm2009_original_with_guo_expressions(tmp_path):
    data = write_original_bfm(tmp_path / "BFM", np.random.default_rng(2))
    model = load_face_model(f"bfm2009:{tmp_path / 'BFM' / '01_MorphableModel.mat'}")
    np.testing.assert_allclose(model.mean_shape.numpy(), OCTA, atol=1e-4)  # micrometres -> mm
    for k in range(3):
        expected = data["shapePC"][:, k].reshape(V, 3) * data["shapeEV"][k, 0] / 1000
        np.testing.assert_allclose(mode(model, "identity", k), expected, atol=1e-4)
    # The clockwise tl is reoriented to counter-clockwise outward.
    np.testing.assert_array_equal(model.triangles.numpy(), OCTA_TRIS)
    assert model.metadata["winding_flipped"] is True
    assert model.expression_dim == 2
    for k in range(2):
        got = mode(model, "expression", k)
        expected = data["exp_modes"][k] * data["exp_std"][k] / 1000
        np.testing.assert_allclose(got[data["trim"]], expected, atol=1e-4)
        np.testing.assert_array_equal(got[3], 0.0)
    expected = (data["texMU"][:, 0] + data["texPC"][:, 0] * 40).reshape(V, 3) / 255
    np.testing.assert_allclose(model.albedo(torch.tensor([[1.0]]))[0].numpy(), expected, atol=1e-5)
    assert (model.landmarks68 == -1).all()


def test_bfm2009_landmark_mapping_and_no_expressions(tmp_path):
    write_original_bfm(tmp_path, np.random.default_rng(3), with_expressions=False)
    mapping = tmp_path / "ibug_to_bfm.txt"
    mapping.write_text("landmarkMappings ; boost-info style\n{\n\t 9    5 ; chin\n\t31    0 ; nose tip\n}\n")
    model = load_face_model(f"bfm2009:{tmp_path}", landmarks=mapping)
    assert model.expression_dim == 0
    assert model.landmarks68[8] == 5 and model.landmarks68[30] == 0 and (model.landmarks68 == -1).sum() == 66


def test_bfm2009_bad_files(tmp_path):
    data = write_original_bfm(tmp_path / "BFM", np.random.default_rng(4))
    exp = tmp_path / "BFM" / "Exp_Pca.bin"
    exp.write_bytes(exp.read_bytes()[:-6])
    with pytest.raises(FaceModelFormatError, match=r"Exp_Pca\.bin: .* bytes do not hold"):
        load_face_model(f"bfm2009:{tmp_path / 'BFM'}")
    (tmp_path / "BFM" / "std_exp.txt").unlink()
    exp.write_bytes(struct.pack("<i", 2) + np.zeros(3 * 5 * 3, "<f4").tobytes())
    with pytest.raises(FaceModelFormatError, match=r"std_exp\.txt: expression standard deviations not found"):
        load_face_model(f"bfm2009:{tmp_path / 'BFM'}")
    scipy.io.savemat(tmp_path / "other.mat", {"shapeMU": data["shapeMU"]})
    with pytest.raises(FaceModelFormatError, match=r"other\.mat: variable 'shapePC' missing"):
        load_face_model(f"bfm2009:{tmp_path / 'other.mat'}")
    scipy.io.savemat(tmp_path / "unrelated.mat", {"weights": np.zeros(3)})
    with pytest.raises(FaceModelFormatError, match="not a BFM2009 file"):
        load_face_model(f"bfm2009:{tmp_path / 'unrelated.mat'}")


# ================================================================================== BFM2017 + AlbedoMM
def write_statismo_group(f: h5py.File, group: str, mean: np.ndarray, basis: np.ndarray,
                         var: np.ndarray) -> None:
    f[f"{group}/model/mean"] = mean.astype(np.float32)
    f[f"{group}/model/pcaBasis"] = basis.astype(np.float32)
    f[f"{group}/model/pcaVariance"] = var.astype(np.float32)


def orthonormal(rng, k: int) -> np.ndarray:
    """``(3V, k)`` orthonormal columns, like a PCA basis."""
    return np.linalg.qr(rng.normal(size=(3 * V, k)))[0]


def write_bfm2017(path: Path, rng) -> dict:
    d = {
        "shape": (OCTA.reshape(-1), orthonormal(rng, 3), np.array([400.0, 100.0, 25.0])),
        "expression": (rng.normal(0, 2, 3 * V), orthonormal(rng, 2), np.array([36.0, 4.0])),
        "color": (rng.uniform(0.2, 0.8, 3 * V), orthonormal(rng, 2), np.array([0.04, 0.01])),
    }
    with h5py.File(path, "w") as f:
        for group, (mean, basis, var) in d.items():
            write_statismo_group(f, group, mean, basis, var)
        f["shape/representer/points"] = OCTA.T.astype(np.float32)
        f["shape/representer/cells"] = OCTA_TRIS.T.astype(np.uint32)
    return d


def test_bfm2017_with_expression_and_colour(tmp_path):
    d = write_bfm2017(tmp_path / "model2017-1_bfm_nomouth.h5", np.random.default_rng(5))
    model = load_face_model(f"bfm2017:{tmp_path / 'model2017-1_bfm_nomouth.h5'}")
    shape_mean, shape_basis, shape_var = d["shape"]
    expr_mean, expr_basis, expr_var = d["expression"]
    np.testing.assert_allclose(model.mean_shape.numpy(), (shape_mean + expr_mean).reshape(V, 3), atol=1e-4)
    alpha = np.array([1.0, -0.5, 2.0])
    expected = shape_mean + expr_mean + shape_basis @ (alpha * np.sqrt(shape_var))
    got = model.decode(identity=torch.tensor(alpha[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(got, expected.reshape(V, 3), atol=1e-4)  # millimetres as stored
    expected = (expr_basis[:, 0] * 6.0).reshape(V, 3)  # sqrt(variance 36)
    np.testing.assert_allclose(mode(model, "expression", 0), expected, atol=1e-4)
    np.testing.assert_array_equal(model.triangles.numpy(), OCTA_TRIS)
    col_mean, col_basis, col_var = d["color"]
    np.testing.assert_allclose(model.albedo(torch.tensor([[1.0, 1.0]]))[0].numpy(),
                               (col_mean + col_basis @ np.sqrt(col_var)).reshape(V, 3), atol=1e-5)
    assert model.specular_dim == 0


def test_bfm2017_with_albedomm(tmp_path):
    rng = np.random.default_rng(6)
    write_bfm2017(tmp_path / "bfm.h5", rng)
    diffuse = (rng.uniform(0.1, 0.7, 3 * V), orthonormal(rng, 3), np.array([0.09, 0.04, 0.01]))
    specular = (rng.uniform(0.0, 0.3, 3 * V), orthonormal(rng, 2), np.array([0.01, 0.0025]))
    albedo_file = tmp_path / "albedoModel2020_bfm_albedoPart.h5"
    with h5py.File(albedo_file, "w") as f:
        write_statismo_group(f, "diffuseAlbedo", *diffuse)
        write_statismo_group(f, "specularAlbedo", *specular)
    model = load_face_model(f"bfm2017:{tmp_path / 'bfm.h5'}", albedo=albedo_file)
    assert model.albedo_dim == 3 and model.specular_dim == 2
    c = np.array([0.0, 2.0, 0.0])
    np.testing.assert_allclose(model.albedo(torch.tensor(c[None], dtype=torch.float32))[0].numpy(),
                               (diffuse[0] + diffuse[1] @ (c * np.sqrt(diffuse[2]))).reshape(V, 3), atol=1e-5)
    np.testing.assert_allclose(model.specular(torch.tensor([[0.0, -1.0]]))[0].numpy(),
                               (specular[0] - specular[1][:, 1] * 0.05).reshape(V, 3), atol=1e-5)

    with h5py.File(tmp_path / "face12_albedo.h5", "w") as f:  # an AlbedoMM for another mask
        write_statismo_group(f, "diffuseAlbedo", diffuse[0][:-3], diffuse[1][:-3], diffuse[2])
    with pytest.raises(FaceModelFormatError, match=r"face12_albedo\.h5: diffuseAlbedo/model/mean has 15"):
        load_face_model(f"bfm2017:{tmp_path / 'bfm.h5'}", albedo=tmp_path / "face12_albedo.h5")


def test_bfm2017_bad_files(tmp_path):
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f["shape/model/mean"] = OCTA.reshape(-1)
    with pytest.raises(FaceModelFormatError, match=r"partial\.h5: HDF5 dataset 'shape/representer/points'"):
        load_face_model(f"bfm2017:{tmp_path / 'partial.h5'}")
    (tmp_path / "fake.h5").write_text("not hdf5")
    with pytest.raises(FaceModelFormatError, match=r"fake\.h5: not a readable HDF5 file"):
        load_face_model(f"bfm2017:{tmp_path / 'fake.h5'}")


# ================================================================================== FLAME
JAW, NECK = 2, 1


def flame_dict(rng, with_posedirs: bool = True) -> dict:
    """A 10-vertex FLAME-layout model in metres: 5 joints, sparse J_regressor, 4 + 2 shapedirs."""
    v = 10
    template = rng.uniform(-0.05, 0.05, (v, 3))
    weights = np.zeros((v, 5))
    weights[0:3, 0] = 1       # root
    weights[3:5, NECK] = 1    # neck
    weights[5:8, JAW] = 1     # jaw
    weights[8, [NECK, JAW]] = 0.5
    weights[9, 4] = 1         # right eye
    regressor = np.zeros((5, v))
    regressor[0, 0:3] = 1 / 3
    regressor[1, 3:5] = 0.5
    regressor[2, [4, 6]] = 0.5  # the jaw joint depends on a jaw vertex moved by the pose correctives
    regressor[3, 9] = 1
    regressor[4, 9] = 1
    return {
        "v_template": template,
        "shapedirs": rng.normal(0, 0.002, (v, 3, 6)),
        "posedirs": rng.normal(0, 0.001, (v, 3, 36)) if with_posedirs else np.zeros((v, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "f": np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8], [7, 8, 9]], dtype=np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "J": regressor @ template,
    }


def write_pickle(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def expected_flame_pose(d: dict, beta: np.ndarray, global_rot: np.ndarray, jaw_rot: np.ndarray) -> np.ndarray:
    """Hand-computed posed vertices (mm) for a global and a jaw rotation (other joints at rest)."""
    shaped = (d["v_template"] + d["shapedirs"] @ beta) * 1000
    joints = d["J_regressor"].toarray() @ shaped  # regressed before pose correctives
    rg, rj = Rotation.from_rotvec(global_rot).as_matrix(), Rotation.from_rotvec(jaw_rot).as_matrix()
    feature = np.zeros(36)
    feature[9 * (JAW - 1): 9 * JAW] = (rj - np.eye(3)).ravel()  # R - I of the non-root joints, in order
    posed = shaped + (d["posedirs"] * 1000) @ feature
    j0, j2 = joints[0], joints[JAW]
    rest = (posed - j0) @ rg.T + j0                                  # root, neck and eyes: global rotation
    jaw = ((posed - j2) @ rj.T + j2 - j0) @ rg.T + j0                # jaw: about its joint, then global
    w = d["weights"][:, JAW:JAW + 1]
    return (1 - w) * rest + w * jaw


def test_flame_shape_expression_and_units(tmp_path):
    d = flame_dict(np.random.default_rng(7))
    model = load_face_model(f"flame:{write_pickle(tmp_path / 'generic_model.pkl', d)}", num_identity=4)
    assert (model.identity_dim, model.expression_dim, model.num_joints) == (4, 2, 5)
    assert model.joint_names == ["global", "neck", "jaw", "left_eye", "right_eye"]
    np.testing.assert_allclose(model.mean_shape.numpy(), d["v_template"] * 1000, atol=1e-4)
    np.testing.assert_allclose(mode(model, "identity", 3), d["shapedirs"][:, :, 3] * 1000, atol=1e-4)
    np.testing.assert_allclose(mode(model, "expression", 1), d["shapedirs"][:, :, 5] * 1000, atol=1e-4)
    tri = d["f"].astype(np.int64)
    expected_tri = tri[:, ::-1] if model.metadata["winding_flipped"] else tri
    np.testing.assert_array_equal(model.triangles.numpy(), expected_tri)
    assert (model.landmarks68 == -1).all()
    assert torch.equal(model.parents, torch.tensor([-1, 0, 1, 1, 1]))


def test_flame_jaw_rotation_moves_only_jaw_vertices(tmp_path):
    d = flame_dict(np.random.default_rng(8), with_posedirs=False)
    model = load_face_model(f"flame:{write_pickle(tmp_path / 'm.pkl', d)}", num_identity=4)
    pose = torch.zeros(1, 5, 3)
    pose[0, JAW] = torch.tensor([0.35, 0.0, 0.0])
    rest, posed = model.decode(), model.decode(pose=pose)
    moved = (posed - rest).norm(dim=-1)[0].numpy()
    jaw_weighted = d["weights"][:, JAW] > 0
    assert (moved[jaw_weighted] > 0.1).all() and (moved[~jaw_weighted] < 1e-4).all()
    # A vertex bound only to the jaw turns rigidly about the jaw joint.
    rot = Rotation.from_rotvec([0.35, 0, 0]).as_matrix()
    joint = d["J_regressor"].toarray()[JAW] @ (d["v_template"] * 1000)
    expected = rot @ (d["v_template"][6] * 1000 - joint) + joint
    np.testing.assert_allclose(posed[0, 6].numpy(), expected, atol=1e-3)


def test_flame_pose_matches_hand_computed_lbs(tmp_path):
    d = flame_dict(np.random.default_rng(9))
    model = load_face_model(f"flame:{write_pickle(tmp_path / 'm.pkl', d)}", num_identity=4)
    beta = np.array([0.5, -1.0, 0.0, 2.0, 1.0, -0.5])
    global_rot, jaw_rot = np.array([0.1, -0.2, 0.05]), np.array([0.3, 0.02, -0.1])
    pose = torch.zeros(1, 5, 3)
    pose[0, 0] = torch.tensor(global_rot, dtype=torch.float32)
    pose[0, JAW] = torch.tensor(jaw_rot, dtype=torch.float32)
    coefficients = torch.tensor(beta[None], dtype=torch.float32)
    got = model.decode(coefficients[:, :4], coefficients[:, 4:], pose=pose)[0].numpy()
    np.testing.assert_allclose(got, expected_flame_pose(d, beta, global_rot, jaw_rot), atol=2e-3)


def test_flame_chumpy_pickle_loads_without_chumpy(tmp_path, monkeypatch):
    d = flame_dict(np.random.default_rng(10))

    class Ch:  # what chumpy.ch.Ch pickles as: its __dict__ with the value in 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    chumpy_ch.Ch = Ch
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "chumpy", chumpy)
        m.setitem(sys.modules, "chumpy.ch", chumpy_ch)
        path = write_pickle(tmp_path / "chumpy.pkl", {**d, "v_template": Ch(d["v_template"]),
                                                      "shapedirs": Ch(d["shapedirs"])})
    assert "chumpy" not in sys.modules
    assert b"chumpy.ch" in path.read_bytes()
    model = load_face_model(f"flame:{path}", num_identity=4)
    np.testing.assert_allclose(model.mean_shape.numpy(), d["v_template"] * 1000, atol=1e-4)
    assert "chumpy" not in sys.modules


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_flame_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    d = flame_dict(np.random.default_rng(11))
    path = write_pickle(tmp_path / "evil.pkl", {**d, "bs_style": _Evil(marker)})
    with pytest.raises(FaceModelFormatError, match=r"evil\.pkl: refusing to unpickle (posix|nt|os)\.system"):
        load_face_model(f"flame:{path}")
    assert not marker.exists()

    class EvalBomb:
        def __reduce__(self):
            return (eval, ("__import__('os').system('touch " + str(marker) + "')",))

    with pytest.raises(FaceModelFormatError, match=r"refusing to unpickle (__builtin__|builtins)\.eval"):
        load_face_model(f"flame:{write_pickle(tmp_path / 'eval.pkl', EvalBomb())}")
    assert not marker.exists()


def test_flame_bad_files(tmp_path):
    d = flame_dict(np.random.default_rng(12))
    good = write_pickle(tmp_path / "good.pkl", d).read_bytes()
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(FaceModelFormatError, match=r"cut\.pkl: not a readable pickle"):
        load_face_model(f"flame:{tmp_path / 'cut.pkl'}")
    (tmp_path / "notes.pkl").write_text("hello\n")
    with pytest.raises(FaceModelFormatError, match=r"notes\.pkl: not a readable pickle"):
        load_face_model(f"flame:{tmp_path / 'notes.pkl'}")
    del d["posedirs"]
    with pytest.raises(FaceModelFormatError, match="key 'posedirs' missing"):
        load_face_model(f"flame:{write_pickle(tmp_path / 'noposedirs.pkl', d)}")
    with pytest.raises(FaceModelFormatError, match="generic_model.pkl: file not found"):
        load_face_model(f"flame:{tmp_path}")


# ================================================================================== SFM (eos cereal)
def eigen(m: np.ndarray) -> bytes:
    """An Eigen matrix as eos' cereal binary writes it: int32 rows, int32 cols, column-major float32."""
    m = np.asarray(m, dtype=np.float64)
    m = m[:, None] if m.ndim == 1 else m
    return struct.pack("<ii", *m.shape) + m.astype("<f4").ravel(order="F").tobytes()


def cereal_string(s: str) -> bytes:
    return struct.pack("<Q", len(s.encode())) + s.encode()


def triangles_bytes(t: np.ndarray) -> bytes:
    return struct.pack("<Q", len(t)) + np.asarray(t, "<i4").tobytes()


def pca_bytes(mean, basis, eigenvalues, tris) -> bytes:
    return eigen(mean) + eigen(basis) + eigen(eigenvalues) + triangles_bytes(tris)


EMPTY_PCA = pca_bytes(np.zeros(0), np.zeros((0, 0)), np.zeros(0), np.zeros((0, 3)))


def blendshapes_bytes(names: list[str], shapes: np.ndarray) -> bytes:
    return struct.pack("<Q", len(names)) + b"".join(cereal_string(n) + eigen(s.reshape(-1))
                                                   for n, s in zip(names, shapes, strict=True))


def sfm_parts(rng) -> dict:
    return {"basis": np.linalg.qr(rng.normal(size=(3 * V, 3)))[0], "eig": np.array([900.0, 100.0, 16.0]),
            "shapes": rng.normal(0, 3, (2, V, 3)), "uv": rng.uniform(0, 1, (V, 2))}


def test_sfm_version4_blendshapes_landmarks_uvs(tmp_path):
    p = sfm_parts(np.random.default_rng(13))
    data = (struct.pack("<I", 4) + pca_bytes(OCTA.reshape(-1), p["basis"], p["eig"], OCTA_TRIS) + EMPTY_PCA
            + b"\x00" + struct.pack("<i", 1) + blendshapes_bytes(["happy", "surprised"], p["shapes"])
            + b"\x00" + struct.pack("<Q", 2) + cereal_string("9") + struct.pack("<i", 3)
            + cereal_string("31") + struct.pack("<i", 1)
            + struct.pack("<Q", V) + p["uv"].astype("<f8").tobytes() + triangles_bytes(np.zeros((0, 3))))
    (tmp_path / "sfm_shape_6.bin").write_bytes(data)
    model = load_face_model(f"sfm:{tmp_path / 'sfm_shape_6.bin'}")
    np.testing.assert_allclose(model.mean_shape.numpy(), OCTA, atol=1e-4)
    np.testing.assert_allclose(mode(model, "identity", 1), (p["basis"][:, 1] * 10).reshape(V, 3), atol=1e-4)
    assert model.expression_names == ["happy", "surprised"]
    np.testing.assert_allclose(mode(model, "expression", 1), p["shapes"][1], atol=1e-4)
    assert model.landmarks68[8] == 3 and model.landmarks68[30] == 1 and (model.landmarks68 == -1).sum() == 66
    np.testing.assert_allclose(model.uvs.numpy(), np.stack([p["uv"][:, 0], 1 - p["uv"][:, 1]], 1), atol=1e-6)
    assert torch.equal(model.uv_triangles, model.triangles)
    np.testing.assert_array_equal(model.triangles.numpy(), OCTA_TRIS)
    assert model.albedo_space == "none" and model.metadata["eos_version"] == 4


def test_sfm_version1_colour_with_separate_blendshapes_and_mapping(tmp_path):
    rng = np.random.default_rng(14)
    p = sfm_parts(rng)
    colour_mean, colour_basis = rng.uniform(0.2, 0.8, 3 * V), np.linalg.qr(rng.normal(size=(3 * V, 2)))[0]
    data = (struct.pack("<I", 1) + pca_bytes(OCTA.reshape(-1), p["basis"], p["eig"], OCTA_TRIS)
            + pca_bytes(colour_mean, colour_basis, np.array([0.04, 0.01]), OCTA_TRIS) + struct.pack("<Q", 0))
    (tmp_path / "sfm_6.bin").write_bytes(data)
    shapes = blendshapes_bytes(["anger", "joy"], p["shapes"])
    (tmp_path / f"expression_blendshapes_{V}.bin").write_bytes(shapes)
    (tmp_path / "ibug_to_sfm.txt").write_text("# TOML\n[landmark_mappings]\n 9 =    5  # chin\n"
                                              "31 =   0  # tip\n\n[contour_landmarks]\nright = [ 1,\n 2 ]\n")
    model = load_face_model(f"sfm:{tmp_path / 'sfm_6.bin'}")
    assert model.expression_names == ["anger", "joy"]
    np.testing.assert_allclose(mode(model, "expression", 0), p["shapes"][0], atol=1e-4)
    assert model.landmarks68[8] == 5 and model.landmarks68[30] == 0
    np.testing.assert_allclose(model.albedo(torch.tensor([[0.0, 1.0]]))[0].numpy(),
                               (colour_mean + colour_basis[:, 1] * 0.1).reshape(V, 3), atol=1e-5)
    assert model.uvs is None


def test_sfm_version3_pca_expression_mean_is_added(tmp_path):
    rng = np.random.default_rng(15)
    p = sfm_parts(rng)
    expr_mean, expr_basis = rng.normal(0, 1, 3 * V), np.linalg.qr(rng.normal(size=(3 * V, 2)))[0]
    data = (struct.pack("<I", 3) + pca_bytes(OCTA.reshape(-1), p["basis"], p["eig"], OCTA_TRIS) + EMPTY_PCA
            + b"\x00" + struct.pack("<i", 0)
            + pca_bytes(expr_mean, expr_basis, np.array([4.0, 1.0]), OCTA_TRIS)
            + b"\x01" + struct.pack("<Q", 0))
    (tmp_path / "m.bin").write_bytes(data)
    model = load_face_model(f"sfm:{tmp_path / 'm.bin'}")
    np.testing.assert_allclose(model.mean_shape.numpy(), OCTA + expr_mean.reshape(V, 3), atol=1e-4)
    np.testing.assert_allclose(mode(model, "expression", 0), (expr_basis[:, 0] * 2).reshape(V, 3), atol=1e-4)
    assert model.expression_names == []


def test_sfm_bad_files(tmp_path):
    p = sfm_parts(np.random.default_rng(16))
    good = (struct.pack("<I", 1) + pca_bytes(OCTA.reshape(-1), p["basis"], p["eig"], OCTA_TRIS) + EMPTY_PCA
            + struct.pack("<Q", 0))
    (tmp_path / "cut.bin").write_bytes(good[:100])
    with pytest.raises(FaceModelFormatError, match=r"cut\.bin: truncated: shape model basis"):
        load_face_model(f"sfm:{tmp_path / 'cut.bin'}")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + good[4:])
    with pytest.raises(FaceModelFormatError, match="version 9"):
        load_face_model(f"sfm:{tmp_path / 'v9.bin'}")
    (tmp_path / "tail.bin").write_bytes(good + b"\x00" * 8)
    with pytest.raises(FaceModelFormatError, match="8 unexpected bytes"):
        load_face_model(f"sfm:{tmp_path / 'tail.bin'}")


# ================================================================================== foreign files
@pytest.mark.parametrize("fmt, name", [("bfm2009", "model.mat"), ("bfm2017", "model.h5"),
                                       ("flame", "model.pkl"), ("sfm", "model.bin"), ("native", "model.npz")])
def test_foreign_file_gives_typed_error_naming_it(tmp_path, fmt: str, name: str):
    path = tmp_path / name
    path.write_text("this is a text file, not a face model\n" * 20)
    with pytest.raises(FaceModelFormatError) as info:
        load_face_model(f"{fmt}:{path}")
    assert info.value.path == str(path) and name in str(info.value)
    with pytest.raises(FaceModelFormatError, match="not found"):
        load_face_model(f"{fmt}:{tmp_path / 'absent' / name}")


# ================================================================================== OBJ reader
def test_obj_reader_handles_interleaving_negative_indices_and_normals(tmp_path):
    path = tmp_path / "mesh.obj"
    path.write_text("# comment\nmtllib x.mtl\nv 0 0 0\nvt 0 0\nv 1 0 0 # trailing comment\nvt 1 0\n"
                    "v 1 1 0 0.5 0.5 0.5\nvt 1 1\nv 0 1 0\nvt 0 1\nvn 0 0 1\ng quad\n"
                    "f 1/1/1 2/2/1 3/3/1 4/4/1\nf -4/-4 -2/-2 -1/-1\n")
    mesh = read_obj_mesh(path)
    np.testing.assert_array_equal(mesh.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mesh.triangles, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    np.testing.assert_array_equal(mesh.uv_triangles, mesh.triangles)
    np.testing.assert_array_equal(mesh.polygon_of_triangle, [0, 0, 1])
    np.testing.assert_array_equal(read_obj_vertices(path), mesh.vertices)


@pytest.mark.parametrize("text, message", [
    ("v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", "malformed vertex line"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "face refers to vertices outside 1..3"),
    ("v 0 0 0\nv 1 0 0\nf 1 2\n", "fewer than 3 corners"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("hello\n", "no vertices"),
])
def test_obj_reader_errors(tmp_path, text: str, message: str):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(FaceModelFormatError, match=rf"bad\.obj: .*{message}"):
        read_obj_mesh(path)
