"""Large-pose augmentation (train/profiling.py): turning a cached face in depth, with its labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from facenet3d.train.data import AugmentConfig, CachedFaceDataset, similarity_matrix
from facenet3d.train.profiling import (
    NUM_LANDMARKS,
    estimate_yaw,
    face_triangle_count,
    head_pivot,
    profile_vertices,
    profiling_triangles,
    rotate_points,
    source_map,
)

from facenet3d.landmarks.align import transform_points
from facenet3d.landmarks.cache import PhotoCache, preprocess
from facenet3d.landmarks.ibug68 import ibug68_from_mediapipe
from facenet3d.landmarks.mean_face import mean_face
from facenet3d.landmarks.topology import mesh_triangles

NOSE_TIP, IMAGE_LEFT_CHEEK, IMAGE_RIGHT_CHEEK = 1, 234, 454
ONLY_PROFILING = AugmentConfig(flip=0.0, scale=0.0, rotate_deg=0.0, translate=0.0, colour=0.0, occluder=0.0, blur=0.0,
                               noise=0.0, jpeg=0.0, profile=1.0, profile_crop="labels")


@pytest.fixture(scope="module")
def photo_cache(tmp_path_factory, faces_dir) -> Path:
    root = tmp_path_factory.mktemp("cache")
    report = preprocess(sorted((faces_dir / "utkface").iterdir())[:6], root, workers=1, progress=False)
    assert report.cached >= 5
    return root


@pytest.fixture(scope="module")
def frontal(photo_cache) -> tuple[dict, np.ndarray]:
    """A cached face within 20 degrees of frontal, and its landmarks (478, 3)."""
    cache = PhotoCache(photo_cache)
    for i in range(len(cache)):
        points = np.asarray(cache[i]["landmarks478"], np.float64)
        if abs(estimate_yaw(points)) < 20:
            return cache[i], points
    pytest.fail("no near-frontal face among the cached photos")


def test_yaw_is_zero_on_the_mean_face_and_adds_up_under_turns(frontal):
    assert abs(estimate_yaw(mean_face() * np.array([1.0, -1.0, -1.0]))) < 1e-6
    _, points = frontal
    pivot = head_pivot(points)
    for turn in (-50.0, 20.0, 70.0):
        assert estimate_yaw(rotate_points(points, turn, pivot)) == pytest.approx(estimate_yaw(points) + turn, abs=1e-6)


def test_profiling_mesh_is_the_face_mesh_plus_closed_holes_and_rings():
    tri = profiling_triangles()
    face = face_triangle_count()
    assert np.array_equal(tri[: len(mesh_triangles())], mesh_triangles())
    assert len(mesh_triangles()) < face < len(tri)
    assert tri.min() == 0 and tri.max() == NUM_LANDMARKS + 3 * 36 - 1  # 36-vertex face oval, 3 rings
    assert not np.isin(np.arange(468, NUM_LANDMARKS), tri).any()  # iris points carry no triangle


def test_no_turn_maps_every_pixel_onto_itself(frontal):
    _, points = frontal
    source, turned = profile_vertices(points, 0.0)
    np.testing.assert_allclose(turned[:, :2], source, atol=1e-9)
    where, on_face = source_map(source, turned[:, :2], turned[:, 2], 224)
    centres = np.stack(np.meshgrid(np.arange(224) + 0.5, np.arange(224) + 0.5), -1)
    assert not np.isnan(where).any()  # the outer ring covers the whole crop
    np.testing.assert_allclose(where, centres, atol=2e-3)
    assert 0.2 < on_face.mean() < 0.9


def test_a_turn_shows_visible_points_where_they_were_and_hides_the_far_cheek(frontal):
    _, points = frontal
    source, turned = profile_vertices(points, 55.0)
    where, _ = source_map(source, turned[:, :2], turned[:, 2], 224)

    def shown(vertex: int) -> np.ndarray:  # photo position of what the output shows at the turned vertex
        u, v = turned[vertex, :2]
        return where[int(v), int(u)]

    # A positive turn moves the nose to the image left and brings the image-right cheek forward.
    assert turned[NOSE_TIP, 0] < points[NOSE_TIP, 0]
    for vertex in (NOSE_TIP, IMAGE_RIGHT_CHEEK):
        assert np.linalg.norm(shown(vertex) - points[vertex, :2]) < 2.0, vertex
    # The far cheek went behind the face: the z-buffer shows something nearer there.
    assert np.linalg.norm(shown(IMAGE_LEFT_CHEEK) - points[IMAGE_LEFT_CHEEK, :2]) > 10.0


def test_turned_samples_show_each_landmark_where_the_photo_had_it(photo_cache, frontal):
    """On a photo whose pixels encode their own position, the turned sample's pixel at a visible
    landmark's label holds that landmark's position in the photo: image and labels agree."""
    item, points = frontal
    coded = dict(item)
    ys, xs = np.mgrid[0:224, 0:224]
    # Pixel centres at +0.5 (facenet3d's convention), float so that nothing is rounded.
    coded["crop"] = np.stack([xs + 0.5, ys + 0.5, np.zeros_like(xs)], -1).astype(np.float32)
    data = CachedFaceDataset([PhotoCache(photo_cache)], [(0, 0)], 160, ONLY_PROFILING)
    m = similarity_matrix(224, 160, scale=1.05, angle_deg=7.0, shift=(3.0, -2.0))
    crop, skin, warp, turned = data._turned(coded, points, 45.0, m)
    labels = transform_points(turned[:, :2], warp)
    for vertex in (NOSE_TIP, IMAGE_RIGHT_CHEEK, 6, 152):  # nose, near cheek, nose bridge, chin
        u, v = labels[vertex] - 0.5  # bilinear read at the label (cv2 puts pixel centres at 0)
        shown = cv2.remap(crop, np.float32([[u]]), np.float32([[v]]), cv2.INTER_LINEAR)[0, 0, :2]
        # A turn about the vertical axis keeps y: a bilinear read of the linear y code is exact. In x
        # the turn is affine per triangle, and the read straddles the creases around a vertex.
        dx, dy = shown - points[vertex, :2]
        assert abs(dy) < 0.02 and abs(dx) < 0.5, (vertex, dx, dy)
    # Skin only on the face mesh: the stretched rings beyond the far cheek (image left) are not
    # compared with a render.
    assert skin[labels[NOSE_TIP, 1].astype(int), labels[NOSE_TIP, 0].astype(int)] > 0.5
    far_edge = int(labels[:468, 0].min())
    assert skin[:, : far_edge - 2].max() == 0
    assert estimate_yaw(turned) == pytest.approx(estimate_yaw(points) + 45.0, abs=1e-6)


def test_dataset_turns_near_frontal_faces_to_large_yaw_and_leaves_profiles_alone(photo_cache, frontal):
    _, points = frontal
    data = CachedFaceDataset([PhotoCache(photo_cache)], [(0, 0)], 160, ONLY_PROFILING)
    rng = np.random.default_rng(0)
    after = [estimate_yaw(points) + data._profile_yaw(estimate_yaw(points), rng) for _ in range(200)]
    assert all(30.0 - 1e-9 <= abs(y) <= 80.0 + 1e-9 for y in after)
    assert min(after) < 0 < max(after) or abs(estimate_yaw(points)) > 5.0
    profile = rotate_points(points, 60.0, head_pivot(points))
    assert data._profile_yaw(estimate_yaw(profile), rng) == 0.0
    unaugmented = CachedFaceDataset([PhotoCache(photo_cache)], [(0, 0)], 160, None)
    assert unaugmented._profile_yaw(estimate_yaw(points), rng) == 0.0


def test_turned_samples_are_well_formed_and_skip_the_teacher(photo_cache):
    cache = PhotoCache(photo_cache)
    data = CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], 96, ONLY_PROFILING,
                             teachers=np.zeros((len(cache), 3), np.float32))
    torch.manual_seed(0)
    turned = 0
    for i in range(len(data)):
        s = data[i]
        plain = transform_points(np.asarray(cache[i]["landmarks68"], np.float64), s["warp"].double().numpy())
        moved = not np.allclose(s["landmarks68"].numpy(), plain, atol=1e-2)
        turned += moved
        assert bool(s["has_teacher"]) is not moved
        assert bool(s["turn_deg"] != 0) is moved
        assert s["image"].shape == (3, 96, 96) and torch.isfinite(s["landmarks_dense"]).all()
        # The 68 labels are the dense ones' iBUG subset (both come from the turned landmarks).
        dense = np.concatenate([s["landmarks_dense"].numpy(), np.zeros((10, 2), np.float32)])
        np.testing.assert_allclose(s["landmarks68"].numpy(), ibug68_from_mediapipe(dense), atol=1e-4)
    assert turned >= 1


def test_labels_of_strongly_turned_faces_are_not_trusted(photo_cache):
    cache = PhotoCache(photo_cache)
    yaws = np.array([abs(estimate_yaw(np.asarray(cache[i]["landmarks478"]))) for i in range(len(cache))])
    limit = float(np.median(yaws))
    data = CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], 96, None, label_max_yaw=limit)
    weights = np.array([float(data[i]["landmark_weight"]) for i in range(len(data))])
    np.testing.assert_array_equal(weights, (yaws <= limit).astype(float))
    assert 0 < weights.sum() < len(weights)
    trusting = CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], 96, None)
    assert all(float(trusting[i]["landmark_weight"]) == 1.0 for i in range(len(trusting)))


def test_turned_faces_are_cropped_as_the_pipeline_crops_a_photo(photo_cache, frontal):
    """``profile_crop: detector`` re-crops the turned face from MediaPipe's landmarks of it, as
    ``reconstruct`` crops a photographed profile; a view without a face is not turned at all."""
    from dataclasses import replace

    from facenet3d.train.data import turned_view

    from facenet3d.landmarks.align import alignment_matrix, compose_affine
    from facenet3d.landmarks.detect import FaceDetector

    item, points = frontal
    cache = PhotoCache(photo_cache)
    by_detector = CachedFaceDataset([cache], [(0, 0)], 160, replace(ONLY_PROFILING, profile_crop="detector"))
    by_labels = CachedFaceDataset([cache], [(0, 0)], 160, ONLY_PROFILING)
    m = similarity_matrix(224, 160)
    crop, _, warp, turned = by_detector._turned(item, points, 50.0, m)
    _, _, warp_labels, turned_labels = by_labels._turned(item, points, 50.0, m)
    np.testing.assert_allclose(turned, turned_labels)  # same turn, same labels (in cache px)...
    assert np.abs(warp - warp_labels).max() > 0.5  # ...another crop
    # The crop is the one the pipeline's alignment gives on the turned photo.
    source, moved = profile_vertices(points, 50.0)
    view, _ = turned_view(item, source, moved, np.eye(2, 3), 224)
    lm68 = FaceDetector(max_faces=1).detect(view)[0].landmarks68
    expected = alignment_matrix(lm68, 224)
    np.testing.assert_allclose(warp, compose_affine(m, expected), atol=1e-6)
    labels = transform_points(turned[:, :2], warp)
    assert crop.shape == (160, 160, 3) and ((labels > 0) & (labels < 160)).all()
    blank = {**item, "crop": np.zeros_like(item["crop"])}
    assert by_detector._turned(blank, points, 50.0, m) is None


def test_turned_error_tells_a_trained_regressor_from_an_untrained_one(photo_cache, tmp_path):
    from facenet3d.train.turned_error import landmark_errors, main, turning

    from facenet3d.network import create_regressor, load_regressor
    from facenet3d.network.weights import face_model_for

    model = face_model_for("fast")  # the face model of the profiled v2 regressors
    cache = PhotoCache(photo_cache)
    items = [(0, i) for i in range(len(cache))]
    plain = CachedFaceDataset([cache], items, 160, None)
    turned = CachedFaceDataset([cache], items, 160, turning(60.0, 80.0))
    trained = load_regressor("fast", model)
    untrained = create_regressor("resnet18", model)  # the mean face, facing the camera
    assert landmark_errors(trained, model, plain, progress=False).shape == (len(cache), 3)
    good = landmark_errors(trained, model, turned, turned_only=True, progress=False)
    bad = landmark_errors(untrained, model, turned, turned_only=True, progress=False)
    assert 1 <= len(good) == len(bad) <= len(cache)
    # Turned 60-80 degrees, the shipped regressor follows the turned labels (all, inner, jaw);
    # a frontal mean face misses them by several times as much.
    assert (good.mean(0) < 8.0).all(), good.mean(0)
    assert (bad.mean(0) > 2.5 * good.mean(0)).all(), (bad.mean(0), good.mean(0))
    out = tmp_path / "turned.json"
    assert main(["--cache", str(photo_cache), "--val-fraction", "1.0", "--n", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["as_they_are"]["n"] == 3 and set(report["turned"]) == {"n", "all", "inner", "jaw"}


def test_unknown_profile_crop_is_refused():
    with pytest.raises(ValueError, match="profile_crop"):
        AugmentConfig(profile=0.5, profile_crop="box")
