"""Photometric fidelity, identity consistency, fairness statistics and the compared methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facenet3d.evaluate.fairness import ita_degrees, race_groups, srgb_to_linear, worst_best
from facenet3d.evaluate.identity import identity_statistics, shape_distances, shape_metric
from facenet3d.evaluate.methods import ReferenceFaceDetector, box_iou, mean_face_model
from facenet3d.evaluate.photometric import render_fidelity


def _rendered_target(model, size: int = 64):
    """Neutral tiny-model face, its render as the 'photo' (sRGB) and the renderer."""
    from facenet3d.params import FaceParams
    from facenet3d.refine import FitTarget, render_params
    from facenet3d.render import Renderer
    from facenet3d.render.color import linear_to_srgb

    params = FaceParams.neutral(1, model.identity_dim, model.expression_dim, model.albedo_dim)
    renderer = Renderer.from_model(model, shading="pixel")
    with torch.no_grad():
        out = render_params(model, renderer, params, size)
    photo = linear_to_srgb(out.image)
    covered = out.mask[..., 0] > 0.5
    target = FitTarget(photo, torch.zeros(1, 478, 3), torch.zeros(1, 68, 2), covered.float())
    return params, renderer, target, covered


def test_fidelity_of_a_perfect_and_of_a_wrong_render(tiny_face_model):
    params, renderer, target, covered = _rendered_target(tiny_face_model)
    assert 200 < int(covered.sum()) < 64 * 64
    f = render_fidelity(tiny_face_model, renderer, params, target)
    assert float(f.psnr[0]) > 60 and float(f.ssim[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(f.rmse[0]) < 1e-3 and int(f.pixels[0]) == int(covered.sum())
    # The tiny model's mean albedo is uniform: the rendered albedo is that colour.
    np.testing.assert_allclose(f.albedo[0].numpy(), [0.55, 0.38, 0.3], atol=1e-4)
    # The photo's skin everywhere, grey where the render does not reach: those pixels count as
    # black in the render, so the error is known exactly.
    target.skin_mask = torch.ones_like(target.skin_mask)
    target.image = torch.where(covered[..., None], target.image, torch.full_like(target.image, 0.5))
    f = render_fidelity(tiny_face_model, renderer, params, target)
    uncovered = 64 * 64 - int(covered.sum())
    mse = 0.25 * uncovered / (64 * 64)
    assert float(f.rmse[0]) == pytest.approx(np.sqrt(mse), rel=1e-3)
    assert float(f.psnr[0]) == pytest.approx(-10 * np.log10(mse), abs=0.01)


def test_shape_distances_are_rms_vertex_distances():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 50, 3))
    x = rng.normal(size=(5, 4))
    shapes = np.einsum("nk,kvc->nvc", x, basis)
    direct = np.sqrt(((shapes[:, None] - shapes[None]) ** 2).sum(-1).mean(-1))
    np.testing.assert_allclose(shape_distances(x, x, shape_metric(basis)), direct, atol=1e-6)


def test_identity_statistics_on_known_groups():
    metric = np.eye(2)  # coefficients are the shape: distances are Euclidean
    x = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0], [0.0, 10.0], [0.0, 12.0]])
    labels = ["a", "a", "b", "b", "c", "c"]
    s = identity_statistics(x, labels, metric)
    assert s["within_mm"] == pytest.approx(2.0)
    between = shape_distances(x, x, metric)[np.not_equal.outer(labels, labels)]
    assert s["between_mm"] == pytest.approx(between.mean())
    assert s["ratio"] == pytest.approx(2.0 / between.mean())
    assert s["identification"] == 1.0 and s["chance"] == pytest.approx(1 / 3)
    # Shuffled labels: the groups no longer hold together.
    s = identity_statistics(x, ["a", "b", "c", "a", "b", "c"], metric)
    assert s["identification"] < 0.5 and s["ratio"] > 0.8


def test_ita_matches_cielab():
    from skimage.color import rgb2lab

    for srgb in ([0.9, 0.75, 0.65], [0.35, 0.22, 0.15], [0.6, 0.45, 0.3], [1.0, 1.0, 1.0]):
        lab = rgb2lab(np.array([[srgb]]))[0, 0]
        expected = np.degrees(np.arctan2(lab[0] - 50, lab[2]))
        assert ita_degrees(srgb_to_linear(np.array(srgb))) == pytest.approx(expected, abs=0.05)
    assert ita_degrees(srgb_to_linear(np.array([0.9, 0.75, 0.65]))) > 40 > ita_degrees(
        srgb_to_linear(np.array([0.35, 0.22, 0.15])))


def test_groups_and_ratios(tmp_path):
    names = ["20_0_0_1.jpg.chip.jpg", "30_1_1_2.jpg.chip.jpg", "40_1_1_3.jpg.chip.jpg", "x.jpg"]
    paths = [tmp_path / n for n in names]
    groups = race_groups(paths)
    assert {k: [p.name for p in v] for k, v in groups.items()} == {0: [names[0]], 1: names[1:3]}
    assert worst_best({"a": 2.0, "b": 1.0, "c": 1.5}) == pytest.approx(2.0)
    assert worst_best({"a": 30.0, "b": 20.0}, higher_is_worse=False) == pytest.approx(20 / 30)
    assert worst_best({"a": 1.0, "b": None}) is None


def test_mean_face_model_has_no_shape_modes(tiny_face_model):
    mean = mean_face_model(tiny_face_model)
    coeffs = torch.randn(2, tiny_face_model.identity_dim)
    expr = torch.randn(2, tiny_face_model.expression_dim)
    np.testing.assert_allclose(mean.decode(coeffs, expr).numpy(),
                               tiny_face_model.mean_shape.expand(2, -1, -1).numpy(), atol=1e-6)
    assert torch.equal(mean.landmarks68, tiny_face_model.landmarks68)
    assert tiny_face_model.decode(coeffs).sub(tiny_face_model.mean_shape).abs().max() > 0.1  # untouched


def test_reference_detector_picks_the_annotated_face(faces_dir):
    import cv2

    from facenet3d.errors import NoFaceError
    from facenet3d.landmarks import read_image

    folder = faces_dir / "lfw-expressions"
    a = read_image(folder / "Abdullah_Gul_0001.jpg").pixels
    b = read_image(folder / "Abdullah_Gul_0002.jpg").pixels
    small = cv2.resize(b, (b.shape[1] // 2, b.shape[0] // 2))
    canvas = np.zeros((a.shape[0], a.shape[1] + small.shape[1], 3), np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[: small.shape[0], a.shape[1]:] = small
    det = ReferenceFaceDetector()
    faces = det.detect(canvas)
    assert len(faces) == 2 and faces[0].box[2] < a.shape[1] + 5  # largest (left) first
    right = np.array([a.shape[1], 0, canvas.shape[1], small.shape[0]], np.float64)
    with det.preferring(right):
        picked = det.detect(canvas)
    assert picked[0].box[0] > a.shape[1] - 5 and len(picked) == 2
    with det.preferring(np.array([0.0, 340.0, 5.0, 349.0])), pytest.raises(NoFaceError):
        det.detect(canvas)
    assert det.detect(canvas)[0].box[2] < a.shape[1] + 5  # the preference ended with the block
    assert box_iou(np.array([0, 0, 2, 2.0]), np.array([1, 1, 3, 3.0])) == pytest.approx(1 / 7)


def test_photometric_cli_on_one_photo(faces_dir, tmp_path):
    from facenet3d.cli import main

    photo = sorted((faces_dir / "utkface").glob("*.jpg"))[0]
    out = tmp_path / "p.json"
    assert main(["evaluate", "photometric", "--photos", str(photo), "--json", str(out), "--baseline", "mean-face",
                 "--threads", "1", "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["n_evaluated"] == 1 and report["settings"]["method"] == "mean-face"
    # The posed mean face under a light matched to the skin: a recognisable, imperfect match.
    assert 10.0 < report["psnr_db"]["mean"] < 35.0 and 0.2 < report["ssim"]["mean"] < 1.0
