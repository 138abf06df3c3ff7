"""AFLW2000-3D NME protocol: annotation reading, the normaliser, yaw bins, the report, one real image."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import scipy.io

from facenet3d.evaluate.aflw2000 import (
    AFLW_PIXEL_OFFSET,
    evaluate_aflw2000,
    fit_to_truth,
    gt_box_crop,
    list_images,
    nme_68,
    point_errors,
    read_annotation,
    region_breakdown,
    summarise_nme,
    yaw_bin,
)
from facenet3d.evaluate.common import EvaluationDataError, evenly_spaced, summary

#: A frontal AFLW2000-3D image (|yaw| 1 degree) on which MediaPipe's 68 points are accurate.
REAL_IMAGE = "image00061"


def _ground_truth(width: float = 40.0, height: float = 90.0) -> np.ndarray:
    """(68, 2) points whose bounding box is ``width x height`` (not square: sqrt(w h) differs
    from the diagonal, the longer side and the mean side)."""
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 1, (68, 2)) * [width, height] + [100.0, 50.0]
    pts[0] = [100.0, 50.0]
    pts[1] = [100.0 + width, 50.0 + height]
    return pts


def _write_mat(path, pts_xy: np.ndarray, yaw_rad: float) -> None:
    pt3d = np.vstack([pts_xy.T, np.zeros((1, 68))]).astype(np.float32)
    pose = np.array([[0.1, yaw_rad, -0.05, 200.0, 210.0, -40.0, 0.001]], np.float32)
    scipy.io.savemat(str(path), {"pt3d_68": pt3d, "Pose_Para": pose, "roi": np.array([[1, 2, 3, 4]], np.int16)})


def test_annotation_and_nme_exact(tmp_path):
    gt_file = _ground_truth()
    _write_mat(tmp_path / "a.mat", gt_file, math.radians(-47.0))
    ann = read_annotation(tmp_path / "a.mat")
    # MATLAB's first pixel centre is 1, facenet3d's 0.5.
    np.testing.assert_allclose(ann.landmarks68, gt_file - AFLW_PIXEL_OFFSET, atol=1e-4)
    assert ann.yaw_deg == pytest.approx(-47.0, abs=1e-4)
    # Every prediction 5 px away (a 3-4-5 triangle): NME = 5 / sqrt(40 * 90) = 5 / 60.
    pred = ann.landmarks68 + [3.0, 4.0]
    assert nme_68(pred, ann.landmarks68) == pytest.approx(5.0 / 60.0, rel=1e-4)
    # Offsets of different lengths: the mean of the per-point distances, not an RMS.
    pred = ann.landmarks68.copy()
    pred[:34] += [6.0, 8.0]  # 10 px
    assert nme_68(pred, ann.landmarks68) == pytest.approx(5.0 / 60.0, rel=1e-4)
    assert nme_68(ann.landmarks68, ann.landmarks68) == 0.0


def test_yaw_bins_at_the_edges():
    # The peers' code: |yaw| <= 30, (30, 60], > 60 (everything above 60 in the last bin).
    assert [yaw_bin(y) for y in (0.0, 29.99, 30.0, -30.0)] == [0, 0, 0, 0]
    assert [yaw_bin(y) for y in (30.001, -45.0, 60.0, -60.0)] == [1, 1, 1, 1]
    assert [yaw_bin(y) for y in (60.001, -89.0, 90.0, 97.5, -120.0)] == [2, 2, 2, 2, 2]


def test_summary_is_the_mean_of_bin_means():
    nmes = np.array([0.01, 0.03, 0.05, 0.10])
    yaws = np.array([10.0, -30.0, 45.0, 75.0])
    s = summarise_nme(nmes, yaws)
    assert s["yaw_0_30"] == pytest.approx(2.0)
    assert s["yaw_30_60"] == pytest.approx(5.0)
    assert s["yaw_60_90"] == pytest.approx(10.0)
    assert s["mean"] == pytest.approx(17.0 / 3.0)  # not the image mean, 4.75
    assert s["all"] == pytest.approx(4.75)
    empty_bin = summarise_nme(nmes[:2], yaws[:2])
    assert empty_bin["yaw_30_60"] is None and empty_bin["mean"] is None


def test_point_errors_and_region_breakdown():
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 200, (68, 2))
    gt[30, 0] = gt[36:48, 0].mean() - 5.0  # the nose left of the eyes: the face looks image-left
    w, h = gt.max(0) - gt.min(0)
    norm = float(np.sqrt(w * h))
    pred = gt.copy()
    pred[0:17, 0] -= 0.1 * norm  # the jaw moved 10 % toward where the face looks
    pred[36:42] += np.array([0.0, 0.04 * norm])  # the right eye 4 % down: no facing offset
    errors, offsets = point_errors(pred, gt)
    assert errors.mean() == pytest.approx(nme_68(pred, gt))
    assert np.allclose(offsets[0:17], 0.1) and np.allclose(offsets[17:], 0.0)
    # The same face mirrored looks image-right: the offsets keep their sign.
    flip = np.array([-1.0, 1.0])
    _, mirrored = point_errors(pred * flip, gt * flip)
    assert np.allclose(mirrored, offsets)
    table = region_breakdown(np.stack([errors, errors * 2]), np.stack([offsets, offsets]), np.array([10.0, 70.0]))
    assert set(table["error"]) == {"yaw_0_30", "yaw_60_90"}
    assert table["facing_offset"]["yaw_60_90"]["jaw"] == pytest.approx(10.0)
    assert table["error"]["yaw_0_30"]["right_eye"] == pytest.approx(4.0)
    assert table["error"]["yaw_60_90"]["right_eye"] == pytest.approx(8.0)
    assert table["facing_offset"]["yaw_0_30"]["nostrils"] == pytest.approx(0.0)


def test_gt_box_crop_is_a_whole_pixel_shift_centred_on_the_box():
    forward, side = gt_box_crop(np.array([100.0, 50.0, 140.0, 140.0]), box_scale=2.0)
    assert side == 180
    np.testing.assert_array_equal(forward[:, :2], np.eye(2))
    assert forward[:, 2] == pytest.approx([-30.0, -5.0])  # box centre (120, 95) -> cut-out centre (90, 90)


def test_bad_annotation_is_a_typed_error(tmp_path):
    (tmp_path / "broken.mat").write_bytes(b"not a mat file")
    with pytest.raises(EvaluationDataError, match="broken.mat"):
        read_annotation(tmp_path / "broken.mat")
    scipy.io.savemat(str(tmp_path / "short.mat"), {"pt3d_68": np.zeros((3, 21)), "Pose_Para": np.zeros((1, 7))})
    with pytest.raises(EvaluationDataError, match="3 x 68"):
        read_annotation(tmp_path / "short.mat")
    with pytest.raises(EvaluationDataError, match="no .jpg"):
        list_images(tmp_path)


def test_sampling_and_summary_helpers():
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced(list(range(3)), None) == [0, 1, 2]
    s = summary([1.0, 2.0, 6.0, float("nan")])
    assert (s["median"], s["mean"], s["n"]) == (2.0, 3.0, 3)


@pytest.fixture(scope="module")
def one_real_image(shared, tmp_path_factory):
    folder = tmp_path_factory.mktemp("aflw")
    for suffix in (".jpg", ".mat"):
        shutil.copy(shared / "data" / "aflw2000-3d" / "dev" / f"{REAL_IMAGE}{suffix}", folder)
    return folder


def test_real_image_end_to_end_with_mediapipe(one_real_image):
    from facenet3d.evaluate.methods import load_method

    method = load_method("mediapipe")
    report = evaluate_aflw2000(method, one_real_image, crop="gt-box", progress=False)
    assert report["n_failed"] == 0 and report["n_evaluated"] == 1
    nme = report["nme_68"]
    # MediaPipe's points are within 3 % of the face size on this frontal face; a pixel-convention
    # or normaliser mistake, or the wrong face, would not be.
    assert 0.5 < nme["yaw_0_30"] < 3.0
    assert nme["all"] == pytest.approx(nme["yaw_0_30"])
    assert nme["mean"] is None  # one bin only
    detect = evaluate_aflw2000(method, one_real_image, crop="detect", progress=False)
    assert abs(detect["nme_68"]["all"] - nme["all"]) < 1.0
    assert report["per_image"][0]["image"] == f"{REAL_IMAGE}.jpg"
    assert report["n_per_bin_annotated"] == {"yaw_0_30": 1, "yaw_30_60": 0, "yaw_60_90": 0}


def test_fit_to_truth_keeps_its_own_points_and_approaches_the_truth(one_real_image):
    from facenet3d.evaluate.methods import MethodUnavailableError, load_method
    from facenet3d.landmarks.image_io import read_image

    method = load_method("landmarks", weights="none")
    ann = read_annotation(one_real_image / f"{REAL_IMAGE}.mat")
    pred = method.run(read_image(one_real_image / f"{REAL_IMAGE}.jpg").pixels, reference_box=ann.box)
    # Refitted to the points it already projects to, the face stays put (to a fraction of a
    # pixel): the photo -> crop -> photo transforms are each other's inverse.
    assert np.abs(fit_to_truth(method, pred.reconstruction, pred.landmarks68, "all") - pred.landmarks68).max() < 0.2
    inner = fit_to_truth(method, pred.reconstruction, pred.landmarks68, "inner")
    assert np.abs(inner - pred.landmarks68)[17:].max() < 0.3
    plain = evaluate_aflw2000(method, one_real_image, progress=False)
    both = {points: evaluate_aflw2000(method, one_real_image, progress=False, fit_truth=points)
            for points in ("all", "inner")}
    assert both["all"]["settings"]["fit_truth"] == "all" and plain["settings"]["fit_truth"] is None
    # Fitted to the truth's 68 points the face matches them closer than MediaPipe's fit did; the
    # inner-only fit is no closer than that on all 68 (its jaw is predicted, not fitted).
    assert both["all"]["nme_68"]["all"] < 0.8 * plain["nme_68"]["all"]
    assert both["all"]["nme_68"]["all"] <= both["inner"]["nme_68"]["all"] + 0.05
    with pytest.raises(MethodUnavailableError, match="fit_truth refits a face model"):
        evaluate_aflw2000(load_method("mediapipe"), one_real_image, progress=False, fit_truth="all")
    with pytest.raises(ValueError, match="fit_truth"):
        evaluate_aflw2000(method, one_real_image, progress=False, fit_truth="jaw")


def test_a_broken_annotation_is_listed_not_fatal(one_real_image, tmp_path):
    from facenet3d.evaluate.methods import load_method

    shutil.copy(one_real_image / f"{REAL_IMAGE}.jpg", tmp_path / "image99999.jpg")
    (tmp_path / "image99999.mat").write_bytes(b"\0" * 10)
    report = evaluate_aflw2000(load_method("mediapipe"), tmp_path, progress=False)
    assert report["n_failed"] == 1 and report["n_evaluated"] == 0
    assert report["failures"][0]["item"] == "image99999.jpg" and "image99999.mat" in report["failures"][0]["error"]
    assert report["nme_68"]["all"] is None


def test_cli_writes_the_report_and_skips_a_missing_regressor(one_real_image, tmp_path, monkeypatch):
    from facenet3d.cli import main
    from facenet3d.network import weights

    out = tmp_path / "r.json"
    status = main(["evaluate", "aflw2000", "--data", str(one_real_image), "--json", str(out),
                   "--baseline", "mediapipe", "--quiet"])
    assert status == 0
    report = json.loads(out.read_text())
    assert set(report["nme_68"]) == {"yaw_0_30", "yaw_30_60", "yaw_60_90", "mean", "all"}
    assert {"n_images", "n_failed", "seconds_per_image", "settings"} <= set(report)
    assert report["settings"]["method"] == "mediapipe" and report["settings"]["crop"] == "gt-box"
    # A weights file that is not there is the user's error (exit 2, nothing written) ...
    wrong = tmp_path / "wrong.json"
    status = main(["evaluate", "aflw2000", "--data", str(one_real_image), "--json", str(wrong),
                   "--refine", "none", "--weights", str(tmp_path / "no-such-weights.safetensors"), "--quiet"])
    assert status == 2 and not wrong.exists()
    # ... an install without the shipped regressor skips the method (exit 3, the report says why).
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "no-weights")
    skipped = tmp_path / "none.json"
    status = main(["evaluate", "aflw2000", "--data", str(one_real_image), "--json", str(skipped),
                   "--refine", "none", "--weights", "default", "--quiet"])
    assert status == 3
    assert json.loads(skipped.read_text())["skipped"] is True


def test_a_refinement_yaml_is_a_method(one_real_image, tmp_path):
    from facenet3d.cli import main

    settings = tmp_path / "fast-detector.yaml"
    settings.write_text("stages: [landmarks]\nlandmarks:\n  iterations: 5\n  landmark_source: detector\n")
    out = tmp_path / "r.json"
    status = main(["evaluate", "aflw2000", "--data", str(one_real_image), "--json", str(out),
                   "--refine", str(settings), "--quiet"])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["settings"]["method"] == str(settings) and report["n_evaluated"] == 1
    assert report["settings"]["refine"] == str(settings)
    # Neither a preset nor a file: a usage error before any work.
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "aflw2000", "--data", str(one_real_image), "--json", str(tmp_path / "x.json"),
              "--refine", str(tmp_path / "missing.yaml"), "--quiet"])
    assert e.value.code == 2 and not (tmp_path / "x.json").exists()
