"""Regressor v3's training data and losses: labelled crops (:mod:`facenet3d.train.crops`), their augmentation,
the labelled landmark terms on the head model, and a few training steps on real labelled photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet3d.train.data import AFLW21_MIRROR, AugmentConfig, CachedFaceDataset, mirror_maps

from facenet3d.decode import crop_camera, decode_face, project_embedding
from facenet3d.landmarks.align import transform_points
from facenet3d.landmarks.cache import PhotoCache

#: The standard left/right relabelling of iBUG-68 (jaw, brows, nose, eyes, outer and inner lips).
IBUG68_FLIP = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                        26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 27, 28, 29, 30, 35, 34, 33, 32, 31,
                        45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                        54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])
#: Augmentation that only moves the image (so pixel values can be compared).
GEOMETRY_ONLY = {"colour": 0.0, "occluder": 0.0, "blur": 0.0, "noise": 0.0, "jpeg": 0.0, "profile": 0.0}


@pytest.fixture(scope="module")
def crop_cache(shared, tmp_path_factory) -> tuple[Path, Path]:
    """8 AFLW crops and 8 UTKFace photos labelled (teacher, MediaPipe, AFLW's points), then cropped at 96 px."""
    from facenet3d.train.crops import build_crop_cache
    from facenet3d.train.label import aflw_labels_by_name, label_folder

    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.teacher import Teacher3DDFA

    faces = shared / "data" / "faces"
    photos = tmp_path_factory.mktemp("photos")
    for name in ("aflw-crops", "utkface"):
        (photos / name).mkdir()
        for p in sorted((faces / name).glob("*.jpg"))[:8]:
            shutil.copy(p, photos / name / p.name)
    labels = tmp_path_factory.mktemp("labels")
    teacher = Teacher3DDFA.from_dir(shared / "data" / "teachers" / "3ddfa_v2")
    aflw = aflw_labels_by_name(shared / "data" / "aflw-labels" / "aflw21.npz")
    with FaceDetector(max_faces=1) as detector:
        for name in ("aflw-crops", "utkface"):
            label_folder(photos / name, labels, teacher, detector, aflw, chunk=8, progress=False)
    out = tmp_path_factory.mktemp("crops")
    report = build_crop_cache([photos / "aflw-crops", photos / "utkface"], labels, out, size=96, progress=False)
    assert report["added"] == 16 and report["items"] == 16
    again = build_crop_cache([photos / "aflw-crops", photos / "utkface"], labels, out, size=96, progress=False)
    assert again["added"] == 0 and again["items"] == 16  # re-runs skip what is cached
    return out, labels


@pytest.fixture(scope="module")
def head_model():
    from facenet3d.errors import FaceModelFormatError
    from facenet3d.facemodel import load_face_model

    try:
        model = load_face_model("default")
    except FaceModelFormatError as e:
        pytest.skip(f"the default head model is not built: {e}")
    if "ibug68_3ddfa" not in model.landmark_embedding_names:
        pytest.skip("the default face model has no ibug68_3ddfa embedding")
    return model


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear colour ``(N, 3)`` of ``image (H, W, 3)`` at ``points (N, 2)`` px (pixel centres at +0.5)."""
    import cv2

    pts = np.asarray(points, np.float32) - 0.5
    out = cv2.remap(np.asarray(image, np.float32), pts[:, 0][:, None], pts[:, 1][:, None], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out[:, 0]


# -- mirror tables -----------------------------------------------------------------------------


def test_mirror_tables_are_left_right_relabellings():
    mirror68, _ = mirror_maps()
    np.testing.assert_array_equal(mirror68, IBUG68_FLIP)
    assert (AFLW21_MIRROR[AFLW21_MIRROR] == np.arange(21)).all()  # an involution
    assert set(np.flatnonzero(AFLW21_MIRROR == np.arange(21))) == {14, 18, 20}  # nose tip, mouth centre, chin


# -- the crop cache and its samples -----------------------------------------------------------


def test_crop_cache_labels_sit_on_the_same_image_content(crop_cache):
    from facenet3d.train.label import LabelCache

    from facenet3d.landmarks.image_io import read_image

    out, labels = crop_cache
    cache = PhotoCache(out)
    errors, shifted = [], []
    for i, meta in enumerate(cache.items):
        item, source = cache[i], Path(meta["source"])
        row = LabelCache(labels / source.parent.name)[source.name]
        np.testing.assert_allclose(item["teacher68"][:, :2],
                                   transform_points(row["teacher_landmarks68"][:, :2], item["forward"]), atol=1e-3)
        photo = read_image(source).pixels
        at_photo = _sample(photo, row["teacher_landmarks68"][:, :2])
        errors.append(np.abs(_sample(item["crop"], item["teacher68"][:, :2]) - at_photo).mean())
        shifted.append(np.abs(_sample(item["crop"], item["teacher68"][:, :2] + 6.0) - at_photo).mean())
        aflw = item["aflw21"]
        assert np.isfinite(aflw).any() == (source.parent.name == "aflw-crops")
        info = item["label_info"]
        assert 0.0 <= info[0] <= 1.0  # teacher confidence
        if not info[2]:  # MediaPipe missed the face: no MediaPipe points, masks from the teacher's
            assert np.isnan(item["landmarks478"]).all() and item["skin_mask"].any()
    assert np.median(errors) < 6.0 < np.median(shifted)


def test_augmented_sample_moves_and_relabels_every_convention(crop_cache):
    cache = PhotoCache(crop_cache[0])
    items = [(0, i) for i in range(len(cache))]
    plain = CachedFaceDataset([cache], items, 80, None)
    flipped = CachedFaceDataset([cache], items, 80, AugmentConfig(flip=1.0, **GEOMETRY_ONLY))
    torch.manual_seed(0)
    mirror68, _ = mirror_maps()
    checked = 0
    for i in range(len(cache)):
        a, b = plain[i], flipped[i]
        assert b["flipped"]
        m = b["warp"].double().numpy()
        item = cache[i]
        # The flipped sample's point i is the cache's mirror point, moved by the sample's warp...
        np.testing.assert_allclose(b["teacher68"].numpy(), transform_points(item["teacher68"][:, :2], m)[mirror68],
                                   atol=1e-3)
        # ... and it shows what the cache crop shows there.
        img = b["image"].permute(1, 2, 0).numpy() * 255
        diff = np.abs(_sample(img, b["teacher68"].numpy()) - _sample(item["crop"], item["teacher68"][mirror68, :2]))
        assert diff.mean() < 12.0
        for sample in (a, b):
            t, h = sample["teacher68"].numpy(), sample["aflw21"].numpy()
            if abs(item["label_info"][5]) < 25:  # near-frontal: image-left points stay on the image's left
                assert t[36, 0] < t[45, 0] and t[48, 0] < t[54, 0]
                if np.isfinite(h[[6, 11], 0]).all():
                    assert h[6, 0] < h[11, 0]
                checked += 1
        if b["aflw21_weight"] > 0:
            visible = np.isfinite(b["aflw21"].numpy()).all(1)
            assert visible.sum() == np.isfinite(item["aflw21"]).all(1).sum()
        assert float(a["teacher_weight"]) == pytest.approx(float(item["label_info"][0]))
    assert checked >= 8


def test_mediapipe_points_are_trusted_only_where_reliable(crop_cache):
    cache = PhotoCache(crop_cache[0])
    data = CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], 64, None, label_max_yaw=40.0,
                             label_min_score=0.5)
    for i in range(len(cache)):
        info = cache[i]["label_info"]
        expect = bool(info[2]) and info[1] >= 0.5 and abs(info[5]) <= 40.0
        sample = data[i]
        assert float(sample["landmark_weight"]) == float(expect)
        assert torch.isfinite(sample["landmarks_dense"]).all()  # absent points are zeros, not NaN


def test_aflw_points_far_off_the_teachers_face_are_dropped(crop_cache):
    cache = PhotoCache(crop_cache[0])
    data = CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], 96, None)
    i = next(i for i in range(len(cache)) if np.isfinite(cache[i]["aflw21"]).all(1).sum() >= 3)
    item = dict(cache[i])
    kept = np.isfinite(data._labels(item, np.eye(2, 3))[1]).all(1)
    aflw = np.array(item["aflw21"])
    j = int(np.flatnonzero(np.isfinite(aflw).all(1))[0])
    aflw[j] = item["teacher68"][:, :2].max(0) + 200.0  # on another face, far to the lower right
    item["aflw21"] = aflw
    teacher, moved = data._labels(item, np.eye(2, 3))
    assert np.isnan(moved[j]).all()
    np.testing.assert_array_equal(np.isfinite(moved).all(1), kept & (np.arange(21) != j))
    np.testing.assert_allclose(teacher, item["teacher68"][:, :2], atol=1e-4)


# -- losses ------------------------------------------------------------------------------------


def _module(crop: int = 64, **weights):
    from facenet3d.train.module import FaceRegressorModule, LossWeights

    module = FaceRegressorModule(face_model="default", variant="tiny", crop_size=crop, render_size=32,
                                 losses=LossWeights(**weights))
    return module


def test_label_terms_vanish_at_the_truth_and_grow_when_perturbed(head_model):
    from facenet3d.network import neutral_params

    s = 64
    module = _module(s, landmarks68=0.0, landmarks_dense=1.0, teacher68=1.0, aflw21=1.0,
                     expression_bounds=1.0)
    params = neutral_params(head_model, s)
    params.expression[0, :5] = 0.4
    params.identity[0, :3] = torch.tensor([1.0, -0.5, 0.3])
    camera = crop_camera(s)
    decoded = decode_face(head_model, params, camera)
    aflw = project_embedding(head_model, decoded.vertices_camera, camera, "aflw21").clone()
    aflw[0, [12, 16]] = float("nan")  # ear lobes marked invisible
    batch = {"teacher68": project_embedding(head_model, decoded.vertices_camera, camera, "ibug68_3ddfa"),
             "teacher_weight": torch.ones(1), "aflw21": aflw, "aflw21_weight": torch.ones(1),
             "landmarks68": decoded.landmarks68, "landmarks_dense": decoded.landmarks_dense,
             "landmark_weight": torch.ones(1), "has_teacher": torch.zeros(1, dtype=torch.bool)}
    _, terms, _ = module.compute_losses(params, batch, 0.0)
    for name in ("teacher68", "aflw21", "landmarks_dense", "expression_bounds"):
        assert float(terms[name]) < 1e-9, name
    moved = neutral_params(head_model, s)
    moved.identity, moved.expression = params.identity, params.expression.clone()
    moved.translation = params.translation + torch.tensor([[2.0, -1.0, 0.0]])
    moved.expression[0, 0] = 1.5  # beyond the blendshape bound
    _, terms, _ = module.compute_losses(moved, batch, 0.0)
    for name in ("teacher68", "aflw21", "landmarks_dense"):
        assert float(terms[name]) > 1e-6, name
    assert float(terms["expression_bounds"]) == pytest.approx(0.25 / head_model.expression_dim)
    # Invisible points and unlabelled faces cost nothing, wherever the prediction is.
    batch["aflw21"] = torch.full_like(aflw, float("nan"))
    batch["teacher_weight"] = torch.zeros(1)
    _, terms, _ = module.compute_losses(moved, batch, 0.0)
    assert float(terms["aflw21"]) == 0.0 and float(terms["teacher68"]) == 0.0


def test_blendshape_weights_at_their_bound_still_learn_from_the_landmarks(head_model):
    """The neutral start puts every ARKit weight on its lower bound (0): the landmark terms must still
    move them (a plain clamp's gradient is zero there, which froze the expressions of a whole run)."""
    from facenet3d.network import neutral_params

    s = 64
    module = _module(s, landmarks68=0.0, landmarks_dense=1.0, teacher68=1.0, aflw21=0.0, expression_bounds=1.0)
    truth = neutral_params(head_model, s)
    truth.expression[0, head_model.expression_names.index("jawOpen")] = 0.8
    camera = crop_camera(s)
    decoded = decode_face(head_model, truth, camera)
    batch = {"teacher68": project_embedding(head_model, decoded.vertices_camera, camera, "ibug68_3ddfa"),
             "teacher_weight": torch.ones(1), "landmarks68": decoded.landmarks68,
             "landmarks_dense": decoded.landmarks_dense, "landmark_weight": torch.ones(1),
             "has_teacher": torch.zeros(1, dtype=torch.bool)}
    start = neutral_params(head_model, s)
    start.expression.requires_grad_(True)
    loss, terms, _ = module.compute_losses(start, batch, 0.0)
    (grad,) = torch.autograd.grad(loss, start.expression)
    jaw = head_model.expression_names.index("jawOpen")
    assert float(grad[0, jaw]) < 0  # descending opens the jaw
    assert float(grad.abs().max()) == pytest.approx(float(grad[0, jaw].abs()), rel=0.5)
    # Beyond the bound the forward pass is clamped and the penalty pulls the raw value back.
    start2 = neutral_params(head_model, s)
    start2.expression[0, jaw] = -0.5
    start2.expression.requires_grad_(True)
    _, terms2, _ = module.compute_losses(start2, batch, 0.0)
    assert float(terms2["teacher68"]) == pytest.approx(float(terms["teacher68"]), rel=1e-5)
    (grad2,) = torch.autograd.grad(terms2["expression_bounds"], start2.expression)
    assert float(grad2[0, jaw]) < 0


def test_a_few_steps_on_labelled_photos_reduce_the_landmark_loss(crop_cache, head_model):
    torch.manual_seed(0)
    cache = PhotoCache(crop_cache[0])
    data = CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], 64, None, label_max_yaw=40.0)
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    module = _module(64, landmarks68=0.0, landmarks_dense=500.0, teacher68=2000.0, aflw21=4000.0,
                     expression_bounds=100.0)
    opt = torch.optim.Adam(module.regressor.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        loss, terms, _ = module.compute_losses(module(batch["image"]), batch, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float((terms["teacher68"] + terms["aflw21"]).detach()))
    assert np.isfinite(history).all()
    assert history[-1] < 0.5 * history[0]


def test_init_state_carries_a_regressor_across_face_model_rebuilds(head_model, tmp_path):
    from facenet3d.train.module import FaceRegressorModule

    torch.manual_seed(0)
    trained = _module(64)
    with torch.no_grad():
        for p in trained.regressor.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = trained.export(tmp_path / "r.safetensors", trained_steps=7)
    fresh = FaceRegressorModule(face_model="default", variant="tiny", crop_size=64, init_state=str(path))
    assert fresh.initial_weights["matching_tensors"] == fresh.initial_weights["of"]
    for (name, a), (_, b) in zip(trained.regressor.state_dict().items(), fresh.regressor.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
