"""Shared fixtures: where the ``../shared`` data lives and cached extractions of it.

Tests that need ``../shared`` use the ``shared`` fixture. Without the folder they skip with
a reason; with ``FACENET3D_REQUIRE_SHARED=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared")).resolve()


def cache_root() -> Path:
    root = Path(os.environ.get("FACENET3D_CACHE", Path.home() / ".cache" / "facenet3d"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder (or ``$FACENET3D_SHARED``)."""
    root = shared_root()
    if not (root / "data").is_dir():
        msg = f"shared data not found at {root} (set FACENET3D_SHARED)"
        if os.environ.get("FACENET3D_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def ict_dir(shared: Path) -> Path:
    """ICT-FaceKit extracted once from ``shared/data/ict-facekit.tar.xz`` into the cache.

    Extraction goes to a temporary folder renamed when complete, so an interrupted run
    never leaves a half-extracted model behind.
    """
    archive = shared / "data" / "ict-facekit.tar.xz"
    target = cache_root() / f"ict-facekit-{archive.stat().st_size}"
    if not (target / "ict-facekit" / "FaceXModel" / "vertex_indices.json").is_file():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target / "ict-facekit"


@pytest.fixture(scope="session")
def faces_dir(shared: Path) -> Path:
    """``shared/data/faces`` (utkface, aflw-crops, lfw-expressions)."""
    return shared / "data" / "faces"


@pytest.fixture(scope="session")
def tiny_graph(faces_dir: Path, tmp_path_factory):
    """The runtime tests' graph: ``model`` (the shipped face model), ``regressor`` (the tiny
    variant with perturbed head weights, :func:`onnx_fixtures.perturbed_regressor`) and ``onnx``
    (its export), built once for every module that runs the runtime."""
    from types import SimpleNamespace

    from onnx_fixtures import aligned_crops, perturbed_regressor, real_photos

    from facenet3d.network import get_variant
    from facenet3d.network.weights import face_model_for
    from facenet3d.onnx import export_onnx

    model = face_model_for("fast")  # the face model of the fast regressor (v1: small and quick to test)
    crops = aligned_crops(real_photos(faces_dir, 4), get_variant("tiny").crop_size)[0]
    regressor = perturbed_regressor("tiny", model, crops)
    onnx = export_onnx(regressor, model, tmp_path_factory.mktemp("graph") / "tiny.onnx")
    return SimpleNamespace(model=model, regressor=regressor, onnx=onnx)


def tiny_face_model_arrays(identity_dim: int = 4, expression_dim: int = 3, albedo_dim: int = 3,
                           albedo_size: int = 32, seed: int = 0):
    """A small but complete UV-albedo face model on the 468-vertex MediaPipe mesh (mean face).

    Its modes are smooth random displacement fields (a few mm per unit coefficient) and smooth
    random albedo maps, so decoding, rendering and fitting behave like a real model's at a
    fraction of the cost. ``landmarks68`` are the iBUG-68 MediaPipe vertices and
    ``landmarks_mediapipe`` is the identity, as in the default model.
    """
    import numpy as np

    from facenet3d.facemodel import FaceModelArrays
    from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
    from facenet3d.landmarks.mean_face import mediapipe_canonical_mesh

    rng = np.random.default_rng(seed)
    mesh = mediapipe_canonical_mesh()
    v = mesh.vertices.astype(np.float64)
    unit = (v - v.mean(0)) / np.abs(v - v.mean(0)).max()
    features = np.concatenate([unit, unit ** 2, unit[:, :1] * unit[:, 1:2]], 1)  # (V, 7) smooth functions

    def modes(k: int, mm: float) -> np.ndarray:
        return np.einsum("vf,kfc->kvc", features, rng.normal(0, mm / 3, (k, features.shape[1], 3)))

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, albedo_size)] * 2, indexing="ij"), -1)
    albedo_mean = np.broadcast_to(np.array([0.55, 0.38, 0.3]), (albedo_size, albedo_size, 3)).copy()
    albedo_basis = np.stack([np.einsum("hwf,fc->hwc", np.concatenate([grid, grid ** 2], -1),
                                       rng.normal(0, 0.02, (4, 3))) for _ in range(albedo_dim)])
    return FaceModelArrays(
        mean_shape=mesh.vertices.astype(np.float32),
        triangles=mesh.triangles.copy(),
        identity_basis=modes(identity_dim, 4.0).astype(np.float32),
        expression_basis=modes(expression_dim, 3.0).astype(np.float32),
        landmarks68=IBUG68_FROM_MEDIAPIPE.copy(),
        uvs=mesh.uvs.copy(),
        uv_triangles=mesh.triangles.copy(),
        albedo_mean=albedo_mean.astype(np.float32),
        albedo_basis=albedo_basis.astype(np.float32),
        albedo_std=np.ones(albedo_dim, np.float32),
        landmarks_mediapipe=np.arange(468),
        albedo_space="uv",
        metadata={"name": "tiny-test-face", "license": "test fixture"},
    )


@pytest.fixture(scope="session")
def tiny_face_model():
    """A :class:`~facenet3d.facemodel.MorphableModel` of :func:`tiny_face_model_arrays` (no shared data needed)."""
    from facenet3d.facemodel import MorphableModel

    return MorphableModel(tiny_face_model_arrays(), source="tiny_face_model fixture")
