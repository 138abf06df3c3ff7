"""The default face model: the shipped file's structure, and a small end-to-end build."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet3d.train.build_face_model.albedo import canonical_signs
from facenet3d.train.build_face_model.build import BuildConfig, build
from facenet3d.train.build_face_model.mesh import build_render_mesh, close_holes

from facenet3d.facemodel import load_face_model, read_face_model_arrays
from facenet3d.facemodel.registry import shipped_model_path
from facenet3d.facemodel.subdivision import subdivision_operator
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
from facenet3d.landmarks.topology import mesh_triangles

#: The v1 model (MediaPipe geometry): the face model of the shipped v2 regressors.
V1 = shipped_model_path("facenet3d_face_v1")


def test_shipped_v1_model_structure():
    path = V1
    assert path.stat().st_size < 25 * 2**20
    m = load_face_model(V1)
    assert m.num_vertices >= 4000
    assert m.identity_dim >= 30 and m.expression_dim >= 15
    assert m.albedo_space == "uv" and m.albedo_dim >= 40 and m.albedo_mean.shape[0] >= 256
    assert m.landmarks_mediapipe.shape == (468,)
    # The MediaPipe vertices keep their indices, so the 68 landmarks are MediaPipe's table.
    assert torch.equal(m.landmarks68, torch.as_tensor(IBUG68_FROM_MEDIAPIPE))
    assert {"face", "eyes", "mouth", "skin"} <= set(m.region_names)
    assert 0 <= float(m.albedo_mean.min()) and float(m.albedo_mean.max()) <= 1
    # Millimetres: a face about 12-17 cm wide, eyes above the nose above the mouth.
    v = m.mean_shape
    width = float(v[:, 0].max() - v[:, 0].min())
    assert 110 < width < 170
    lm = m.landmarks(v[None])[0]
    assert lm[36:48, 1].mean() > lm[30, 1] > lm[48:68, 1].mean()
    assert lm[30, 2] > lm[0, 2] + 40  # the nose tip stands out of the face (+z)
    # Faces point out: normals of the mean face at the nose tip look along +z.
    n = m.vertex_normals(v[None])[0]
    assert n[int(m.landmarks68[30]), 2] > 0.5
    # Mirror symmetry of the mean shape (x -> -x maps the vertex set onto itself).
    mirrored = v * torch.tensor([-1.0, 1.0, 1.0])
    d = torch.cdist(mirrored, v).min(1).values
    assert float(d.median()) < 0.5
    meta = m.metadata
    assert meta["uv_symmetric"] is True and meta["units"] == "mm"
    report = json.loads(path.with_suffix(".report.json").read_text())
    assert report["geometry"]["identity_modes"] == m.identity_dim
    assert set(report["albedo"]["held_out_rmse_linear_rgb_by_race_group"]) >= {"White", "Black", "Asian", "Indian"}
    # The albedo modes follow the builder's sign convention (a rebuild gives the same signs).
    basis = read_face_model_arrays(path).albedo_basis
    assert np.array_equal(canonical_signs(basis), basis)


def test_canonical_signs_pick_one_sign_per_mode():
    rng = np.random.default_rng(0)
    basis = rng.gamma(2.0, size=(5, 8, 8, 3)) - 1.0  # skewed, so the third moment is far from 0
    flips = np.array([1, -1, -1, 1, -1], float).reshape(-1, 1, 1, 1)
    canon = canonical_signs(basis)
    assert np.array_equal(canonical_signs(basis * flips), canon)
    assert np.array_equal(np.abs(canon), np.abs(basis))
    assert ((canon.reshape(5, -1) ** 3).sum(1) > 0).all()


def test_render_mesh_is_a_linear_interpolating_upsampling():
    mean = read_face_model_arrays(V1).mean_shape[:468].astype(np.float64)
    mesh = build_render_mesh(mean)
    fine = mesh.apply(mean)
    assert np.allclose(fine[:468], mean)  # original vertices kept
    two = np.stack([mean, mean * 1.1])
    assert np.allclose(mesh.apply(two)[1], mesh.apply(mean) * 1.1)  # linear
    closing, closed = close_holes(mesh_triangles(), 468)
    assert closing.shape == (471, 468)  # two eyes and the mouth closed
    up, tris = subdivision_operator(closed, 471, 2)
    assert np.allclose(np.asarray(up.sum(1)).ravel(), 1.0)
    # A closed-hole mesh is a disk: every edge is used by two triangles except the outer border.
    edges = {}
    for t in tris:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            edges[(min(a, b), max(a, b))] = edges.get((min(a, b), max(a, b)), 0) + 1
    assert set(edges.values()) == {1, 2}
    # Consistent winding: every interior edge is traversed once in each direction.
    directed = {(int(t[k]), int(t[(k + 1) % 3])) for t in tris for k in range(3)}
    assert len(directed) == 3 * len(tris)


def small_photo_set(faces_dir: Path) -> list[Path]:
    """Photos of 8 lfw-expressions people (with their emotion labels) and 8 UTKFace photos per race."""
    with open(faces_dir / "lfw-expressions" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    people = sorted({r["identity"] for r in rows})[:8]
    photos = [faces_dir / "lfw-expressions" / r["image"] for r in rows if r["identity"] in people]
    utk = sorted((faces_dir / "utkface").glob("*.jpg"))
    for race in "01234":
        photos += [p for p in utk if p.name.split("_")[2] == race][:8]
    return photos


@pytest.mark.slow
def test_small_build_end_to_end_and_deterministic(faces_dir, tmp_path):
    photos = [str(p) for p in small_photo_set(faces_dir)]

    def run(name: str) -> Path:
        cfg = BuildConfig(photos=photos, output=tmp_path / f"{name}.npz", cache=tmp_path / "cache", seed=3,
                          identity_modes=6, expression_modes=4, albedo_modes=4, albedo_size=64, albedo_per_group=5,
                          held_out_identities=2, workers=1)
        return build(cfg)

    a = run("a")
    model = load_face_model(str(a))
    assert model.identity_dim == 6 and model.expression_dim == 4 and model.albedo_dim == 4
    assert model.albedo_mean.shape == (64, 64, 3)
    report = json.loads(a.with_suffix(".report.json").read_text())
    assert report["geometry"]["photos_held_out"] > 0
    assert report["albedo"]["held_out_rmse_linear_rgb_by_race_group"]
    assert (a.parent / "a_card" / "mean.png").is_file()
    b = run("b")
    ra, rb = read_face_model_arrays(a), read_face_model_arrays(b)
    for name in ("mean_shape", "identity_basis", "expression_basis", "albedo_mean", "albedo_basis"):
        assert np.allclose(getattr(ra, name), getattr(rb, name), atol=1e-3), name


def _people(rng: np.random.Generator, noise_mm: float, expression_mm: float) -> tuple:
    """Synthetic meshes (20 vertices) of 60 people x 8 photos (4 neutral): identity lives in 4
    directions, expression in 3 others, plus isotropic per-photo noise."""
    q, _ = np.linalg.qr(rng.normal(size=(60, 7)))
    ident_dirs, expr_dirs = q[:, :4].T, q[:, 4:].T
    shapes, ids, neutral = [], [], []
    for person in range(60):
        face = rng.normal(size=4) * np.array([8.0, 6.0, 5.0, 4.0]) @ ident_dirs
        for photo in range(8):
            is_neutral = photo < 4
            expr = 0.0 if is_neutral else expression_mm * rng.normal(size=3) @ expr_dirs
            shapes.append(face + expr + noise_mm * rng.normal(size=60))
            ids.append(person)
            neutral.append(is_neutral)
    shapes = np.stack(shapes).reshape(-1, 20, 3)
    return shapes, np.array(ids), np.array(neutral), np.arange(len(ids)) < 30 * 8


def test_separation_bound_finds_disjoint_subspaces_and_reports_isotropic_scatter():
    from facenet3d.train.build_face_model.separation import attribution, separation_bound

    rng = np.random.default_rng(0)
    shapes, ids, neutral, train = _people(rng, noise_mm=0.05, expression_mm=6.0)
    bound = separation_bound(shapes, ids, neutral, train, np.zeros((20, 3)), 4, 3, subspace=10)
    assert bound["identity_variation_attributed_to_expression"] < 0.05
    assert bound["emotional_expression_attributed_to_identity"] < 0.05
    # The report's expression variation also counts the neutral photos' deviations (half of
    # them here): pure scatter, which the 4 + 3 modes share about 4:3.
    assert 0.15 < bound["expression_variation_attributed_to_identity"] < 0.45
    assert bound["directions_between_exceeds_within"] == 4 and bound["held_out_people"] == 30
    # Within-person scatter spread evenly over every direction: whatever the split, the identity
    # basis takes its share of it (4 of the 7 modes fitted), and the bound says so.
    shapes, ids, neutral, train = _people(rng, noise_mm=3.0, expression_mm=0.0)
    bound = separation_bound(shapes, ids, neutral, train, np.zeros((20, 3)), 4, 3, subspace=10)
    assert bound["expression_variation_attributed_to_identity"] > 0.3
    # The attribution itself: a vector in one basis' span is carried by that basis.
    basis = np.eye(60)[:6] * 10.0
    assert attribution(basis[:2] * 3.0, basis[:3], basis[3:]) > 0.98
    assert attribution(basis[4:] * 3.0, basis[:3], basis[3:]) < 0.02
