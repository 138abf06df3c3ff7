"""MediaPipe's face networks on onnxruntime: the converter, the graph logic, agreement with mediapipe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from facenet3d.landmarks.detect import FaceDetector, resolve_backend
from facenet3d.landmarks.image_io import load_image
from facenet3d.landmarks.mediapipe_onnx import (
    FULL_RANGE,
    MODEL_DIR,
    SHORT_RANGE,
    FaceMeshOnnx,
    Roi,
    project,
    ssd_anchors,
    weighted_nms,
)

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("lfw-expressions/Abdullah_Gul_0002.jpg", "utkface/10_0_0_20170103200522151.jpg.chip.jpg",
          "aflw-crops/image04392.jpg")


def test_converter_reproduces_the_shipped_files(tmp_path: Path):
    """The shipped .onnx / .npz files are exactly what the tool makes from the installed wheel."""
    pytest.importorskip("tflite")
    from facenet3d.landmarks.convert_mediapipe import convert_all

    digests = convert_all(tmp_path)
    shipped = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in MODEL_DIR.iterdir()
               if p.suffix in (".onnx", ".npz")}
    assert digests == shipped
    assert {"LICENSE", "NOTICE"} <= {p.name for p in MODEL_DIR.iterdir()}


def test_ssd_anchors_follow_mediapipe_layout():
    short, full = ssd_anchors(SHORT_RANGE), ssd_anchors(FULL_RANGE)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # stride 8: 16 x 16 cells, 2 anchors each; then the three stride-16 layers share 8 x 8 cells, 6 each
    np.testing.assert_allclose(short[:2], [[0.5 / 16, 0.5 / 16]] * 2)
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])
    np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48])


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0.5, 0, 10.5, 10]], float)
    kps = np.arange(4 * 6 * 2, dtype=float).reshape(4, 6, 2)
    scores = np.array([0.9, 0.6, 0.7, 0.1])
    out = weighted_nms(boxes, kps, scores)
    assert [s for _, _, s in out] == [0.9, 0.7]  # the best score is kept, not averaged
    w = np.array([0.9, 0.6, 0.1])
    np.testing.assert_allclose(out[0][0], (boxes[[0, 1, 3]] * w[:, None]).sum(0) / w.sum())
    np.testing.assert_allclose(out[0][1], (kps[[0, 1, 3]] * w[:, None, None]).sum(0) / w.sum())
    np.testing.assert_allclose(out[1][0], boxes[2])


def test_projection_rotates_about_the_roi_centre():
    roi = Roi(100.0, 50.0, 40.0, np.pi / 2)
    # the crop's right-hand edge centre (x = size) lies 20 px below the centre for a 90 degree ROI
    p = project(np.array([[192.0, 96.0, 19.2]]), roi, 192)
    np.testing.assert_allclose(p, [[100.0, 70.0, 4.0]], atol=1e-9)


@pytest.fixture(scope="module")
def backends():
    pytest.importorskip("mediapipe")
    with FaceDetector(backend="mediapipe") as mp_detector, FaceDetector(backend="onnx") as onnx_detector:
        yield mp_detector, onnx_detector


@pytest.mark.parametrize("photo", PHOTOS)
def test_onnx_landmarks_agree_with_mediapipe(faces_dir: Path, backends, photo: str):
    """The whole cascade, both back-ends: same faces, points within a fraction of a pixel."""
    image = load_image(faces_dir / photo)
    a, b = (d.detect(image) for d in backends)
    assert len(a) == len(b)
    la, lb = a[0].landmarks478, b[0].landmarks478
    dist = np.linalg.norm(la[:, :2] - lb[:, :2], axis=1)
    iod = np.linalg.norm(la[33, :2] - la[263, :2])
    # measured: medians 0.05-0.8 % of the inter-ocular distance (the most on small, tight crops)
    assert np.median(dist) < 0.01 * iod and np.percentile(dist, 95) < 0.05 * iod
    assert np.median(np.abs(la[:, 2] - lb[:, 2])) < 0.01 * iod
    assert abs(a[0].score - b[0].score) < 0.01


def test_onnx_detector_finds_both_faces_of_a_pair(faces_dir: Path):
    from PIL import Image

    utk = sorted((faces_dir / "utkface").glob("*.jpg"))
    a = np.array(Image.open(utk[20]).convert("RGB").resize((200, 200)))
    b = np.array(Image.open(utk[30]).convert("RGB").resize((140, 140)))
    pair = np.full((220, 380, 3), 128, np.uint8)
    pair[10:210, 0:200], pair[40:180, 220:360] = a, b
    model = FaceMeshOnnx()
    dets = model.detect(pair)
    assert len(dets) == 2 and all(d.score > 0.5 for d in dets)
    centres = sorted(float((d.box[0] + d.box[2]) / 2) for d in dets)
    assert 30 < centres[0] < 170 and 240 < centres[1] < 340
    lm = model.landmarks(pair, dets[0])
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    assert model.landmarks(np.zeros_like(pair), dets[0]) is None  # a black crop holds no face


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("FACENET3D_LANDMARKS", raising=False)
    assert resolve_backend() == "onnx" and FaceDetector().backend == "onnx"
    monkeypatch.setenv("FACENET3D_LANDMARKS", "mediapipe")
    assert resolve_backend("auto") == "mediapipe" and resolve_backend("onnx") == "onnx"
    monkeypatch.setenv("FACENET3D_LANDMARKS", "dlib")
    with pytest.raises(ValueError, match="FACENET3D_LANDMARKS"):
        resolve_backend()
    with pytest.raises(ValueError, match="backend"):
        FaceDetector(backend="tflite")


def test_runtime_dependencies_hold_no_torch_or_mediapipe():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {d.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert not names & {"torch", "torchvision", "timm", "mediapipe", "pytorch-lightning", "opencv-contrib-python"}
    assert {"onnxruntime", "opencv-python-headless", "numpy"} <= names
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["facenet3d"]
    assert "landmarks/data/mediapipe/*" in data


@pytest.mark.slow
def test_runtime_install_in_a_fresh_venv(shared: Path):
    """The check scripts/test.sh runs: fresh venv, pip install ., size, python -m facenet3d.infer (about a minute)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_runtime_install.py")], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
