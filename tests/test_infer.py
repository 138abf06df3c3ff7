"""The torch-free runtime (``infer/``): no torch imported, the torch path's outputs, batches, video."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import trimesh
from facenet3d.infer.__main__ import main as infer_main
from facenet3d.infer.batch import FAILURES_FILE
from facenet3d.infer.pipeline import MAX_DECODE_SIDE, RuntimeFaceModel, crops_to_input, detect_faces, place_faces
from facenet3d.infer.pipeline import face_result as runtime_face_result
from facenet3d.infer.session import RegressorSession, select_providers
from facenet3d.infer.video import OneEuroFilter
from onnx_fixtures import real_photos
from PIL import Image

from facenet3d.api import FaceReconstructor, chart_mask, face_result
from facenet3d.cli import main as facenet3d_main
from facenet3d.errors import WeightsError
from facenet3d.export.software_render import render_face, sh_shading
from facenet3d.landmarks.detect import FaceDetector
from facenet3d.landmarks.image_io import read_image
from facenet3d.refine.maps_stage import statistical_maps
from facenet3d.render import PinholeCamera, Renderer, apply_pose, euler_to_matrix, sh_directional, sh_uniform
from facenet3d.render.color import linear_to_srgb
from facenet3d.render.shading import sh_shading as torch_sh_shading

REPO = Path(__file__).resolve().parents[1]
FILES = ("mesh.obj", "mesh.mtl", "albedo.png", "specular.png", "roughness.png", "mesh.glb", "params.json",
         "landmarks.json", "overlay.png")


@pytest.fixture(scope="module")
def model(tiny_graph):
    return tiny_graph.model


@pytest.fixture(scope="module")
def regressor(tiny_graph):
    return tiny_graph.regressor


@pytest.fixture(scope="module")
def onnx_path(tiny_graph) -> Path:
    return tiny_graph.onnx


@pytest.fixture(scope="module")
def session(onnx_path):
    return RegressorSession(onnx_path, threads=2)


@pytest.fixture(scope="module")
def runtime_model(session):
    return RuntimeFaceModel.load("default", session.info)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, faces_dir) -> Path:
    """Two real photos, a two-face photo, an unreadable file and a photo without a face."""
    folder = tmp_path_factory.mktemp("photos")
    photos = real_photos(faces_dir, 2)
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    utk = sorted((faces_dir / "utkface").glob("*.jpg"))
    a = np.array(Image.open(utk[20]).convert("RGB").resize((200, 200)))
    b = np.array(Image.open(utk[30]).convert("RGB").resize((140, 140)))
    pair = np.full((220, 380, 3), 128, np.uint8)
    pair[10:210, 0:200], pair[40:180, 220:360] = a, b
    Image.fromarray(pair).save(folder / "two_faces.png")
    (folder / "not_a_photo.jpg").write_text("this is text, not a JPEG")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "noise.png")
    return folder


def jittered_frames(faces_dir: Path, per_photo: int = 10, size: int = 200, seed: int = 0) -> list[np.ndarray]:
    """A synthetic clip: three real photos, each held for ``per_photo`` frames shifted by a few
    pixels at random (what detection jitter looks like to the filter)."""
    rng = np.random.default_rng(seed)
    frames = []
    for p in real_photos(faces_dir, 3):
        base = np.array(Image.open(p).convert("RGB").resize((size, size)))
        for _ in range(per_photo):
            dx, dy = rng.integers(-4, 5, 2)
            frames.append(np.roll(base, (int(dy), int(dx)), axis=(0, 1)))
    return frames


@pytest.fixture(scope="module")
def clip(faces_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    frames = jittered_frames(faces_dir)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, frames[0].shape[1::-1])
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


TORCH_FREE_RUN = textwrap.dedent("""
    import importlib.abc, json, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "mediapipe"):
                raise ImportError(name + " is blocked in this test (the runtime install has neither)")
            return None

    sys.meta_path.insert(0, BlockTorch())
    from facenet3d.infer.__main__ import main

    code = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mediapipe"))
    print(json.dumps({"code": code, "torch_modules": loaded}))
""")


@pytest.fixture(scope="module")
def torch_free_run(onnx_path, photo_folder, clip, tmp_path_factory):
    """``python -m facenet3d.infer`` on the photos and the clip in a fresh interpreter where importing torch or
    mediapipe fails."""
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE_RUN, str(photo_folder), str(clip), "-o", str(out),
                           "--onnx", str(onnx_path), "--threads", "2", "--batch-size", "2", "--quiet",
                           "--frame-meshes", "ply", "--redetect-every", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, out, proc


def test_runtime_never_imports_torch(torch_free_run):
    result, out, proc = torch_free_run
    assert result["torch_modules"] == []
    assert result["code"] == 1, proc.stderr[-2000:]  # two bad inputs, the rest written
    assert "not_a_photo.jpg" in proc.stderr and "noise.png" in proc.stderr


def test_photo_folders_have_the_reconstruct_layout(torch_free_run, photo_folder):
    _, out, _ = torch_free_run
    good = {p.stem for p in photo_folder.glob("*.jpg")} - {"not_a_photo"}
    assert {p.name for p in out.iterdir()} == good | {"two_faces", "clip", FAILURES_FILE}
    for stem in good:
        for f in FILES:
            assert (out / stem / f).is_file(), (stem, f)
        with Image.open(out / stem / "overlay.png") as im, Image.open(photo_folder / f"{stem}.jpg") as src:
            assert im.size == (2 * src.size[0], src.size[1])  # textured | shaded geometry, photo-sized panels
        params = json.loads((out / stem / "params.json").read_text())
        assert params["refine"] == "none" and params["crop"]["size"] == 64
        mesh = trimesh.load(out / stem / "mesh.obj", process=False)
        assert len(mesh.vertices) == 7305
    assert sorted(p.name for p in (out / "two_faces").iterdir() if p.is_dir()) == ["face_0", "face_1"]
    failures = json.loads((out / FAILURES_FILE).read_text())
    assert sorted(Path(f["input"]).name for f in failures) == ["noise.png", "not_a_photo.jpg"]
    assert any("no face" in f["error"] for f in failures)


def test_a_second_run_skips_completed_photos(torch_free_run, photo_folder, onnx_path, capsys):
    _, out, _ = torch_free_run
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("params.json")}
    code = infer_main([str(photo_folder), "-o", str(out), "--onnx", str(onnx_path), "--quiet"])
    assert code == 1  # the bad inputs are tried again and fail again
    assert "0 of 5 photos reconstructed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("params.json")} == stamp
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_outputs_equal_the_torch_path(model, regressor, session, runtime_model, faces_dir):
    """Same crop, same numbers: params.json, mesh, textures and landmarks as ``facenet3d reconstruct
    --refine none`` assembles them with torch; the overlay as the torch renderer draws it."""
    detector = FaceDetector()
    torch_rec = FaceReconstructor(model, regressor, detector=detector, crop_size=session.crop_size,
                                  model_name="default")
    for path in real_photos(faces_dir, 2):
        image = read_image(path, max_side=MAX_DECODE_SIDE)
        photo = read_image(path).pixels
        faces = detect_faces(detector, image, session.crop_size, source=str(path))
        hw = photo.shape[:2]
        placed = place_faces(session.run(crops_to_input(np.stack([f.crop for f in faces]))), faces, runtime_model,
                             session.crop_size, hw)
        with torch.no_grad():
            params = regressor(regressor.prepare_images(np.stack([f.crop for f in faces])))
        maps = statistical_maps(model, params)
        for i, face in enumerate(faces):
            rec = torch_rec._assemble(i, params, maps, face.detected, {"forward": face.forward}, "none", {}, hw)
            expected = face_result(rec, model, torch_rec.renderer, photo, "default")
            got = runtime_face_result(placed[i], runtime_model, photo)
            assert_close_records(got.params, expected.params, path="params")
            assert np.abs(got.mesh.vertices - expected.mesh.vertices).max() < 0.01
            assert np.array_equal(got.mesh.triangles, expected.mesh.triangles)
            assert sorted(got.mesh.textures) == sorted(expected.mesh.textures) == ["albedo", "roughness", "specular"]
            for name, tex in expected.mesh.textures.items():
                assert np.abs(got.mesh.textures[name] - tex).max() < 1e-4, name
            assert np.abs(got.landmarks_image_px - expected.landmarks_image_px).max() < 0.01
            assert np.abs(got.landmarks_mesh_mm - expected.landmarks_mesh_mm).max() < 0.01
            # Overlays, textured panel: the same silhouette; colours differ only where the torch path
            # samples the UV albedo per pixel and the runtime interpolates it from the vertices.
            w = photo.shape[1]
            assert got.overlay.shape == expected.overlay.shape == (photo.shape[0], 2 * w, 3)
            covered_rt = np.any(got.overlay[:, :w] != photo, -1)
            covered_t = np.any(expected.overlay[:, :w] != photo, -1)
            iou = (covered_rt & covered_t).sum() / (covered_rt | covered_t).sum()
            assert iou > 0.97
            diff = np.abs(got.overlay[:, :w].astype(int) - expected.overlay[:, :w].astype(int))[covered_rt & covered_t]
            assert diff.mean() < 4.0 and np.percentile(diff, 95) < 16
            # Shaded-geometry panel (grey mesh, fixed light, landmarks): the same picture.
            diff = np.abs(got.overlay[:, w:].astype(int) - expected.overlay[:, w:].astype(int))
            assert diff.mean() < 2.0 and np.percentile(diff, 99) < 40


def assert_close_records(got, expected, path: str) -> None:
    """JSON records equal up to float tolerance (``seconds`` excepted)."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), path
        for k in expected:
            if k != "seconds":
                assert_close_records(got[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert np.shape(got) == np.shape(expected), path
        assert np.allclose(got, expected, rtol=1e-4, atol=2e-4), path
    elif isinstance(expected, float):
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=2e-4), path
    else:
        assert got == expected, path


def test_video_gives_smoothed_json_lines_meshes_and_an_overlay_video(torch_free_run, clip):
    _, out, _ = torch_free_run
    folder = out / "clip"
    lines = [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(30))
    assert np.allclose([r["time_s"] for r in lines], np.arange(30) / 30.0)
    assert all(r["face"] for r in lines)
    for r in lines:
        assert len(r["expression"]) == 20 and len(r["landmarks68_image_px"]) == 68
        assert np.allclose(np.array(r["rotation_matrix"]) @ np.array(r["rotation_matrix"]).T, np.eye(3), atol=1e-5)
    meshes = sorted((folder / "meshes").glob("*.ply"))
    assert len(meshes) == 30 and len(trimesh.load(meshes[0], process=False).vertices) == 7305
    (video_file,) = list(folder.glob("overlay.*"))
    video = cv2.VideoCapture(str(video_file))
    n = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        assert frame.shape == (200, 200, 3)
        n += 1
    assert n == 30
    assert all(r["tracking"]["detected"] for r in lines)  # --redetect-every 1: the detector's jitter
    # Within each held photo the frames only jitter: once the filter has settled after the cut, the
    # smoothed pose moves much less than the raw one.
    for start in (0, 10, 20):
        seg = lines[start + 4:start + 10]
        raw = np.array([r["raw"]["principal_px"] for r in seg])
        smooth = np.array([r["camera"]["principal_px"] for r in seg])
        assert np.abs(np.diff(smooth, axis=0)).mean() < 0.5 * np.abs(np.diff(raw, axis=0)).mean()
        raw_t = np.array([r["raw"]["translation_mm"] for r in seg])
        smooth_t = np.array([r["translation_mm"] for r in seg])
        assert np.abs(np.diff(smooth_t, axis=0)).mean() < 0.5 * np.abs(np.diff(raw_t, axis=0)).mean()


def test_frame_folder_without_smoothing_equals_raw(faces_dir, tmp_path, onnx_path):
    frames_dir = tmp_path / "shot"
    frames_dir.mkdir()
    for i, f in enumerate(jittered_frames(faces_dir, per_photo=2)):
        Image.fromarray(f).save(frames_dir / f"{i:04d}.png")
    code = infer_main([str(frames_dir), "-o", str(tmp_path / "out"), "--onnx", str(onnx_path), "--video",
                       "--no-smooth", "--fps", "25", "--no-overlay-video", "--quiet", "--stream",
                       str(tmp_path / "live.jsonl")])
    assert code == 0
    text = (tmp_path / "out/shot/frames.jsonl").read_text()
    assert (tmp_path / "live.jsonl").read_text() == text  # the stream carries the same lines as they come
    lines = [json.loads(x) for x in text.splitlines()]
    assert len(lines) == 6 and np.allclose([r["time_s"] for r in lines], np.arange(6) / 25)
    # Tracked by default: the first frame is detected; later ones follow the regressed face unless it jumped.
    assert lines[0]["tracking"] == {"detected": True, "confidence": 1.0}
    assert all(0.0 <= r["tracking"]["confidence"] <= 1.0 for r in lines)
    video = json.loads((tmp_path / "out/shot/video.json").read_text())
    assert video["detections"] == sum(r["tracking"]["detected"] for r in lines) and video["redetect_every"] == 30
    for r in lines:
        assert r["rotation_ypr_deg"] == r["raw"]["rotation_ypr_deg"]
        assert r["camera"]["principal_px"] == r["raw"]["principal_px"]
    assert not list((tmp_path / "out/shot").glob("overlay.*"))


def test_a_missing_webcam_is_a_failure_with_its_reason(tmp_path, onnx_path, capsys):
    code = infer_main(["--webcam", "57", "-o", str(tmp_path / "out"), "--onnx", str(onnx_path), "--quiet"])
    assert code == 1
    assert "camera 57: cannot open" in capsys.readouterr().err
    (failure,) = json.loads((tmp_path / "out/failures.json").read_text())
    assert "camera 57" in failure["error"]
    assert not (tmp_path / "out/webcam57").exists()
    assert infer_main(["-o", str(tmp_path / "out"), "--onnx", str(onnx_path)]) == 2  # neither inputs nor a camera


def test_a_camera_stopped_by_a_signal_keeps_what_it_captured(faces_dir, tmp_path, session, runtime_model,
                                                             monkeypatch):
    """A live camera ends with Ctrl-C: the frames captured so far are written, not dropped. The
    camera is stood in for by real frames followed by the signal (this machine has none)."""
    import signal

    import facenet3d.infer.video as video_module

    from facenet3d.batch import Interrupted

    frames = jittered_frames(faces_dir, per_photo=3)[:5]

    def fake_camera(index: int, fps=None):
        def read():
            for i, f in enumerate(frames):
                yield i, i / 30.0, f
            raise Interrupted(signal.SIGINT)

        return read(), 30.0

    monkeypatch.setattr(video_module, "camera_source", fake_camera)
    stream = io.StringIO()
    report = video_module.reconstruct_video(3, tmp_path, session, runtime_model, overlay=False, quiet=True,
                                            stream=stream)
    assert report.interrupted and report.frames == 5 and report.folder == tmp_path / "webcam3"
    text = (report.folder / "frames.jsonl").read_text()
    assert len(text.splitlines()) == 5 and stream.getvalue() == text
    assert (report.folder / "animation.glb").is_file() and (report.folder / "video.json").is_file()


def test_one_euro_filter():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert f(np.array([3.0]), 0.0)[0] == 3.0  # the first sample passes unchanged
    assert np.allclose([f(np.array([3.0]), ti)[0] for ti in t[1:20]], 3.0)
    # Jitter around a constant is reduced several times.
    f.reset()
    noisy = 1.0 + rng.normal(0, 0.1, len(t))
    out = np.array([f(np.array([x]), ti)[0] for x, ti in zip(noisy, t, strict=True)])
    assert out[30:].std() < 0.4 * noisy[30:].std()
    # On a fast ramp, beta > 0 follows with less lag than beta = 0.
    ramp = 5.0 * t

    def lag(beta: float) -> float:
        g = OneEuroFilter(min_cutoff=0.5, beta=beta)
        y = np.array([g(np.array([x]), ti)[0] for x, ti in zip(ramp, t, strict=True)])
        return float(np.abs(ramp - y)[100:].mean())

    assert lag(1.0) < 0.5 * lag(0.0)


def test_chart_mask_equals_the_torch_one(model, runtime_model):
    expected = chart_mask(model, model.albedo_mean.shape[0])
    assert np.array_equal(runtime_model.chart_mask(), expected)


def test_numpy_renderer_matches_the_torch_renderer(model):
    """Per-vertex albedo and SH shading at the vertices: the torch renderer's vertex shading mode."""
    size = 192
    rot = euler_to_matrix(torch.tensor([[25.0, -10.0, 5.0]]))
    verts = apply_pose(model.mean_shape[None], rot, torch.tensor([[5.0, -8.0, -700.0]]))
    albedo = torch.rand(1, model.num_vertices, 3, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    sh = sh_uniform(0.7) + sh_directional(torch.tensor([[0.4, 0.5, 1.0]]), torch.tensor([[0.5, 0.45, 0.4]]))
    camera = PinholeCamera.create(1000.0, (size, size))
    with torch.no_grad():
        out = Renderer.from_model(model)(verts, camera, sh, albedo)
    expected = linear_to_srgb(out.image)[0].numpy()
    mask_t = out.mask[0, ..., 0].numpy() > 0
    rgba = render_face(verts[0].numpy(), model.triangles.numpy(), albedo[0].numpy(), sh[0].numpy(),
                       (1000.0, 1000.0), (size / 2, size / 2), (size, size))
    mask = rgba[..., 3] > 0
    assert mask.sum() > 5000
    assert (mask != mask_t).sum() <= 0.002 * mask.sum()
    both = mask & mask_t
    assert np.abs(rgba[..., :3][both] - expected[both]).max() < 2e-3


def test_numpy_twins_of_torch_shading_and_decoding(model, runtime_model):
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(1, 500, 3, generator=g, dtype=torch.float64), dim=-1)
    sh = torch.randn(1, 9, 3, generator=g, dtype=torch.float64)
    expected = torch_sh_shading(normals, sh)[0].numpy()
    assert np.abs(sh_shading(normals[0].numpy(), sh[0].numpy()) - expected).max() < 1e-12
    ident, expr = torch.randn(2, 30, generator=g), torch.randn(2, 20, generator=g)
    assert np.abs(runtime_model.decode(ident.numpy(), expr.numpy()) - model.decode(ident, expr).numpy()).max() < 1e-3


def test_session_errors_and_providers(tmp_path, onnx_path):
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu
        assert select_providers("auto") == select_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        assert select_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            select_providers("cuda")
    with pytest.raises(WeightsError, match="no such ONNX file"):
        RegressorSession(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(WeightsError, match="not a loadable ONNX model"):
        RegressorSession(tmp_path / "junk.onnx")
    plain = tmp_path / "plain.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(plain))
    with pytest.raises(WeightsError, match="without facenet3d metadata"):
        RegressorSession(plain)
    session = RegressorSession(onnx_path, threads=1, provider="cpu")
    assert session.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="images must be"):
        session.run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(WeightsError, match="not the one"):
        RuntimeFaceModel.load("default", dataclasses.replace(session.info, face_model_fingerprint="0" * 64))


def test_reconstruct_command_dispatches_to_the_runtime(faces_dir, tmp_path, onnx_path):
    photo = real_photos(faces_dir, 1)[0]
    assert facenet3d_main(["reconstruct", str(photo), "-o", str(tmp_path), "--backend", "onnx",
                           "--onnx", str(onnx_path), "--quiet"]) == 0
    params = json.loads((tmp_path / photo.stem / "params.json").read_text())
    assert params["refine"] == "none" and params["face_model"] == "default"
    assert facenet3d_main(["reconstruct", str(photo), "-o", str(tmp_path), "--backend", "onnx",
                           "--onnx", str(onnx_path), "--refine", "fast"]) == 2
    assert facenet3d_main(["reconstruct", str(photo), "-o", str(tmp_path), "--backend", "onnx"]) == 2
    # A camera goes to the runtime too (none here: a failure with its reason); the torch path refuses it.
    assert facenet3d_main(["reconstruct", "--webcam", "57", "-o", str(tmp_path / "cam"), "--backend", "onnx",
                           "--onnx", str(onnx_path), "--quiet"]) == 1
    assert "camera 57" in (tmp_path / "cam/failures.json").read_text()
    assert facenet3d_main(["reconstruct", "--webcam", "57", "-o", str(tmp_path / "cam")]) == 2


def test_run_runtime_refuses_an_option_the_command_lacks(tmp_path):
    """``facenet3d reconstruct --backend onnx`` calls the runtime as a function with named options;
    a misspelt one is an error, not silently ignored."""
    from facenet3d.infer.__main__ import run_runtime

    with pytest.raises(TypeError, match="max_face"):
        run_runtime([], tmp_path / "out", tmp_path / "g.onnx", max_face=1)
    assert run_runtime([], tmp_path / "out", tmp_path / "g.onnx") == 2  # no inputs: a usage error
