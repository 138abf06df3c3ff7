"""NoW-style geometry error: closest points, alignment, the face sphere, synthetic ICT faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet3d.evaluate.geometry import (
    NOW_LANDMARKS_IBUG68,
    Similarity,
    align_to_scan,
    fit_similarity,
    now_face_region,
    scan_to_mesh_errors,
)
from facenet3d.evaluate.mesh_distance import MeshDistance, closest_points_on_triangles
from facenet3d.geometry import vertex_normals


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    from facenet3d.render import euler_to_matrix

    return euler_to_matrix(torch.tensor([yaw, pitch, roll], dtype=torch.float64)).numpy()


def test_closest_point_on_a_triangle_in_every_region():
    a, b, c = np.array([0.0, 0, 0]), np.array([2.0, 0, 0]), np.array([0.0, 2, 0])
    cases = {
        (0.5, 0.5, 3.0): (0.5, 0.5, 0.0),  # above the inside
        (-1.0, -1.0, 0.0): (0.0, 0.0, 0.0),  # beyond vertex a
        (3.0, -1.0, 1.0): (2.0, 0.0, 0.0),  # beyond vertex b
        (1.0, -2.0, 0.0): (1.0, 0.0, 0.0),  # beyond edge ab
        (-2.0, 1.0, 0.0): (0.0, 1.0, 0.0),  # beyond edge ac
        (2.0, 2.0, 0.0): (1.0, 1.0, 0.0),  # beyond edge bc
    }
    for p, expected in cases.items():
        np.testing.assert_allclose(closest_points_on_triangles(np.array(p), a, b, c), expected, atol=1e-12)
    # Random triangles: never farther than the best of a dense sample of the triangle, and
    # no closer than that sample's resolution allows.
    rng = np.random.default_rng(0)
    for _ in range(8):
        a, b, c = rng.normal(size=(3, 3))
        p = rng.normal(size=(100, 3)) * 2
        q = closest_points_on_triangles(p, a, b, c)
        w = rng.dirichlet([1, 1, 1], 10000)
        sample = w @ np.stack([a, b, c])
        best = np.linalg.norm(p[:, None] - sample[None], axis=-1).min(1)
        d = np.linalg.norm(p - q, axis=1)
        assert (d <= best + 1e-9).all() and (best - d < 0.05).all()


def test_mesh_distance_equals_exhaustive_search():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    md = MeshDistance(sphere.vertices, sphere.faces)
    rng = np.random.default_rng(1)
    points = rng.normal(size=(500, 3)) * 30.0
    got = md.query(points)
    corners = sphere.vertices[sphere.faces]
    all_q = closest_points_on_triangles(points[:, None], corners[None, :, 0], corners[None, :, 1], corners[None, :, 2])
    exhaustive = np.linalg.norm(all_q - points[:, None], axis=-1).min(1)
    np.testing.assert_allclose(got.distance, exhaustive, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(got.closest - points, axis=1), got.distance, atol=1e-9)
    approx = md.query_approximate(points)
    assert (approx.distance >= got.distance - 1e-9).all() and (approx.distance - got.distance).max() < 1.5


def test_fit_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 3)) * 40
    truth = Similarity(1.07, _rotation(25, -10, 5), np.array([3.0, -4.0, 500.0]))
    got = fit_similarity(src, truth.apply(src))
    assert got.scale == pytest.approx(1.07)
    np.testing.assert_allclose(got.rotation, truth.rotation, atol=1e-10)
    np.testing.assert_allclose(got.translation, truth.translation, atol=1e-8)
    rigid = fit_similarity(src, truth.apply(src), scale=False)
    assert rigid.scale == 1.0
    np.testing.assert_allclose(rigid.inverse(rigid.apply(src)), src, atol=1e-9)


def test_now_face_sphere():
    lm7 = np.array([[-45.0, 0, 0], [-15, 0, 0], [15, 0, 0], [45, 0, 0], [0, -50, 0], [-20, -80, 0], [20, -80, 0]])
    # centre 30 % of the way from the nose bottom (0, -50) to the eye midpoint (0, 0): (0, -35);
    # radius 1.4 (90 + 50) / 2 = 98.
    pts = np.array([[0.0, -35 + 97.9, 0], [0.0, -35 + 98.1, 0], [0.0, -35, -97.9], [98.1, -35, 0]])
    assert now_face_region(pts, lm7).tolist() == [True, False, True, False]


@pytest.fixture(scope="module")
def face_mesh():
    """The default model's mean face: vertices, triangles, 68 landmarks (mm)."""
    from facenet3d.facemodel import load_face_model

    model = load_face_model("default")
    v = model.mean_shape.double().numpy()
    # The rendered surface alone (the head's parts, e.g. the teeth, are not on it).
    tri = model.triangles.numpy()
    used, tri = np.unique(tri, return_inverse=True)
    return v[used], tri.reshape(-1, 3), v[model.landmarks68.numpy()], model


def test_rigidly_moved_copy_aligns_to_zero(face_mesh):
    v, tri, lm, _ = face_mesh
    moved = Similarity(1.0, _rotation(30, 10, -5), np.array([20.0, -10.0, 400.0]))
    errors = scan_to_mesh_errors(v, lm, moved.apply(v), tri, moved.apply(lm))
    assert errors.now.max() < 1e-6 and errors.metrical.max() < 1e-6
    assert errors.scale == pytest.approx(1.0)
    # A copy 10 % too large: NoW's similarity absorbs it, the metrical (rigid) variant does not.
    scaled = Similarity(1.1, _rotation(-20, 0, 0), np.array([0.0, 5.0, -30.0]))
    errors = scan_to_mesh_errors(v, lm, scaled.apply(v), tri, scaled.apply(lm))
    assert errors.now.max() < 1e-6 and errors.scale == pytest.approx(1 / 1.1)
    assert errors.metrical.mean() > 1.0


def test_surface_offset_by_one_millimetre(face_mesh):
    v, tri, lm, model = face_mesh
    normals = vertex_normals(torch.as_tensor(v, dtype=torch.float32)[None], torch.as_tensor(tri))[0].double().numpy()
    offset = v + normals
    # Point-to-surface distance of the original vertices to the offset surface: 1 mm where the
    # surface is smooth (the median), slightly less at creases and the border.
    d = MeshDistance(offset, tri).query(v).distance
    assert np.median(d) == pytest.approx(1.0, abs=0.01)
    assert d.max() <= 1.0 + 1e-6
    # Through the alignment: landmarks that agree leave the offset mesh where it is (1 mm);
    # NoW's closest-point refinement then shifts it into the scan and lowers the error (which is
    # why a uniform 1 mm inflation costs less than 1 mm on NoW).
    sel = list(NOW_LANDMARKS_IBUG68)
    mesh = MeshDistance(offset, tri)
    _, on_landmarks = align_to_scan(v, lm[sel], mesh, lm[sel], scale=False, iterations=0)
    assert 0.95 < on_landmarks.mean() <= 1.0 + 1e-6
    _, refined = align_to_scan(v, lm[sel], mesh, lm[sel], scale=False)
    assert refined.mean() < on_landmarks.mean()


@pytest.fixture(scope="module")
def ict_faces(ict_dir):
    from facenet3d.evaluate.synthetic import ICTFaceRenderer

    return ICTFaceRenderer(ict_dir, image_size=256)


def test_synthetic_faces_are_reproducible_and_registered(ict_faces):
    from facenet3d.evaluate.aflw2000 import nme_68
    from facenet3d.landmarks import FaceDetector

    a, b = ict_faces.sample(seed=7, index=3), ict_faces.sample(seed=7, index=3)
    np.testing.assert_array_equal(a.image, b.image)
    other = ict_faces.sample(seed=7, index=4)
    assert not np.array_equal(a.image, other.image)
    assert a.image.shape == (256, 256, 3) and a.image.dtype == np.uint8
    # The ground truth's projected landmarks are where MediaPipe finds the face's: the camera,
    # pose and landmark vertices of the render agree.
    face = FaceDetector().detect(a.image)[0]
    assert nme_68(face.landmarks68, a.landmarks68_image) < 0.08
    # The "scan" keeps the visible face and drops the interiors a scanner cannot see.
    n_face = len(ict_faces.face_index)
    assert 0.75 * n_face < len(ict_faces.scan_index) < n_face
    assert np.isin(ict_faces.landmarks[[30, 36, 45, 48, 54]], ict_faces.scan_index).all()


def test_geometry_evaluation_end_to_end(ict_dir):
    from facenet3d.evaluate.geometry import evaluate_geometry
    from facenet3d.evaluate.methods import MethodUnavailableError, load_method

    report = evaluate_geometry(load_method("mean-face"), ict_dir, n=1, seed=0, image_size=256, progress=False)
    assert report["n_failed"] == 0 and report["n_evaluated"] == 1
    e, m = report["error_mm"], report["error_mm_metrical"]
    # The mean face against a random ICT identity: millimetres, not zero, not centimetres; the
    # similarity alignment does about as well as the rigid one or better.
    assert 0.3 < e["median"] < 5.0 and e["median"] <= m["median"] + 0.05
    assert report["per_face"][0]["scan_points"] > 3000
    with pytest.raises(MethodUnavailableError):
        evaluate_geometry(load_method("mediapipe"), ict_dir, n=1)
