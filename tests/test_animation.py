"""Animation outputs: ARKit blendshapes, smoothing, Live Link Face CSV, animated GLB, and a clip
rendered from the head model with known per-frame blendshapes and pose recovered end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from facenet3d.export.animation import (
    LIVE_LINK_COLUMNS,
    LIVE_LINK_HEADER,
    live_link_timecode,
    read_live_link_csv,
    write_animated_glb,
    write_live_link_csv,
)
from facenet3d.export.arkit import (
    ARKIT_NAMES,
    NoBlendshapesError,
    arkit_matrix,
    blendshape_record,
    from_arkit,
    to_arkit,
)
from facenet3d.export.gltf import matrix_to_quaternion
from facenet3d.track import TRACK_SMOOTHING, FaceTrack, clip_identity, smooth_track
from tests.gltf_validation import assert_valid_gltf

ICT_NAMES = ['browDown_L', 'browDown_R', 'browInnerUp_L', 'browInnerUp_R', 'browOuterUp_L', 'browOuterUp_R',
             'cheekPuff_L', 'cheekPuff_R', 'cheekSquint_L', 'cheekSquint_R', 'eyeBlink_L', 'eyeBlink_R',
             'eyeLookDown_L', 'eyeLookDown_R', 'eyeLookIn_L', 'eyeLookIn_R', 'eyeLookOut_L', 'eyeLookOut_R',
             'eyeLookUp_L', 'eyeLookUp_R', 'eyeSquint_L', 'eyeSquint_R', 'eyeWide_L', 'eyeWide_R', 'jawForward',
             'jawLeft', 'jawOpen', 'jawRight', 'mouthClose', 'mouthDimple_L', 'mouthDimple_R', 'mouthFrown_L',
             'mouthFrown_R', 'mouthFunnel', 'mouthLeft', 'mouthLowerDown_L', 'mouthLowerDown_R', 'mouthPress_L',
             'mouthPress_R', 'mouthPucker', 'mouthRight', 'mouthRollLower', 'mouthRollUpper', 'mouthShrugLower',
             'mouthShrugUpper', 'mouthSmile_L', 'mouthSmile_R', 'mouthStretch_L', 'mouthStretch_R',
             'mouthUpperUp_L', 'mouthUpperUp_R', 'noseSneer_L', 'noseSneer_R']


def test_arkit_names_and_mapping():
    assert len(ARKIT_NAMES) == 52 == len(set(ARKIT_NAMES))
    assert ARKIT_NAMES[:2] == ("eyeBlinkLeft", "eyeLookDownLeft") and ARKIT_NAMES[-1] == "tongueOut"
    m = arkit_matrix(ICT_NAMES)
    assert m.shape == (52, 53)
    # Every ICT mode feeds exactly one ARKit shape; the split pairs are averaged; tongueOut has none.
    assert np.allclose(m.sum(0), [0.5 if n.startswith(("browInnerUp", "cheekPuff")) else 1.0 for n in ICT_NAMES])
    assert m[ARKIT_NAMES.index("tongueOut")].sum() == 0
    x = np.zeros(53)
    x[ICT_NAMES.index("eyeBlink_L")] = 0.7
    x[ICT_NAMES.index("jawOpen")] = 0.4
    x[ICT_NAMES.index("browInnerUp_L")] = 0.6
    x[ICT_NAMES.index("browInnerUp_R")] = 0.2
    x[ICT_NAMES.index("cheekPuff_R")] = 1.0
    x[ICT_NAMES.index("mouthSmile_R")] = 1.3  # outside the bounds: clipped
    rec = blendshape_record(x, ICT_NAMES)
    assert list(rec) == list(ARKIT_NAMES)
    assert rec["eyeBlinkLeft"] == 0.7 and rec["eyeBlinkRight"] == 0.0 and rec["jawOpen"] == 0.4
    assert rec["browInnerUp"] == pytest.approx(0.4) and rec["cheekPuff"] == pytest.approx(0.5)
    assert rec["mouthSmileRight"] == 1.0 and rec["tongueOut"] == 0.0
    # Back: the halves get the whole shape's weight, so ARKit -> ICT -> ARKit is the identity.
    w = np.random.default_rng(0).uniform(0, 1, (4, 52))
    w[:, ARKIT_NAMES.index("tongueOut")] = 0
    assert np.allclose(to_arkit(from_arkit(w, ICT_NAMES), ICT_NAMES), w)
    # A PCA model has no blendshapes, and says so.
    assert arkit_matrix([f"expression_{k:03d}" for k in range(10)]) is None
    assert blendshape_record(np.zeros(10), [f"e{k}" for k in range(10)]) is None
    with pytest.raises(NoBlendshapesError, match="not ARKit blendshapes"):
        to_arkit(np.zeros(3), ["a", "b", "c"])


def test_params_record_has_blendshapes():
    from facenet3d.camera_math import ImageCamera
    from facenet3d.export.records import params_record

    x = np.zeros(53, np.float32)
    x[ICT_NAMES.index("jawOpen")] = 0.5
    params = {"identity": np.zeros(3), "expression": x, "albedo": np.zeros(2), "sh": np.zeros((9, 3)),
              "specular": np.ones(1), "roughness": np.full(1, 0.4), "rotation": np.array([1.0, 0, 0, 0, 1, 0]),
              "translation": np.array([0, 0, -600.0])}
    kw = dict(rotation=np.eye(3), translation=np.array([0, 0, -600.0]),
              camera=ImageCamera((500.0, 500.0), (100.0, 100.0), (200, 200)), crop_size=224,
              crop_forward=np.eye(2, 3), detection_box=np.zeros(4), detection_score=1.0, refine="fast", seconds={})
    rec = params_record(params, expression_names=ICT_NAMES, **kw)
    assert len(rec["blendshapes"]) == 52 and rec["blendshapes"]["jawOpen"] == 0.5
    assert rec["rotation_ypr_deg"] == [0.0, 0.0, 0.0]
    assert "blendshapes" not in params_record({**params, "expression": np.zeros(3)}, expression_names=["a", "b", "c"],
                                              **kw)


def _track(n: int = 10, fps: float = 30.0) -> FaceTrack:
    import torch

    from facenet3d.render import euler_to_matrix

    t = np.arange(n) / fps
    expression = np.zeros((n, 53))
    expression[:, ICT_NAMES.index("jawOpen")] = 0.5 + 0.4 * np.sin(2 * np.pi * t)
    expression[:, ICT_NAMES.index("eyeLookOut_L")] = 0.5
    ypr = np.stack([20 * np.sin(2 * np.pi * t), 5 * np.cos(2 * np.pi * t), np.full(n, 3.0)], 1)
    rot = euler_to_matrix(torch.as_tensor(ypr)).numpy()
    return FaceTrack(frames=np.arange(n) + 5, times=t + 5 / fps, identity=np.linspace(-1, 1, 100),
                     expression=expression, rotation=rot, translation=np.tile([0, 0, -600.0], (n, 1)),
                     expression_names=tuple(ICT_NAMES), fps=fps, expression_bounds=(0.0, 1.0))


def test_smoothing_follows_a_jaw_step_within_two_frames():
    track = _track(12)
    track.expression[:] = 0.0
    track.expression[6:, ICT_NAMES.index("jawOpen")] = 1.0  # a fast mouth opening
    jaw = smooth_track(track, TRACK_SMOOTHING).expression[:, ICT_NAMES.index("jawOpen")]
    assert jaw[:6].max() == 0.0
    assert jaw[7] >= 0.9, jaw  # 90 % within 2 frames of the step at 30 fps
    assert jaw[6] < 1.0  # but it is a filter
    # Jitter at rest is reduced.
    rng = np.random.default_rng(1)
    still = _track(60)
    still.expression[:, ICT_NAMES.index("jawOpen")] = 0.3 + rng.normal(0, 0.02, 60)
    smoothed = smooth_track(still).expression[:, ICT_NAMES.index("jawOpen")]
    assert np.std(np.diff(smoothed)) < 0.6 * np.std(np.diff(still.expression[:, ICT_NAMES.index("jawOpen")]))


def test_clip_identity_is_robust_median():
    ids = np.zeros((7, 3))
    ids[3] = 50.0  # one misled frame
    assert np.allclose(clip_identity(ids), 0.0)


def test_quaternion_matches_matrix():
    import torch

    from facenet3d.render import euler_to_matrix

    r = euler_to_matrix(torch.tensor([[30.0, -20.0, 170.0], [0.0, 0.0, 0.0]], dtype=torch.float64)).numpy()
    q = matrix_to_quaternion(r)
    x, y, z, w = q[0]
    m = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    assert np.allclose(m, r[0], atol=1e-9) and np.allclose(q[1], [0, 0, 0, 1])


def test_live_link_csv_layout(tmp_path: Path):
    assert live_link_timecode(0.0, 30) == "00:00:00:00.000"
    assert live_link_timecode(3661 + 29.5 / 30, 30) == "01:01:01:29.500"
    assert LIVE_LINK_HEADER[:4] == ("Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft")
    assert LIVE_LINK_COLUMNS[14:18] == ("JawForward", "JawRight", "JawLeft", "JawOpen")
    assert LIVE_LINK_COLUMNS[21:23] == ("MouthRight", "MouthLeft") and LIVE_LINK_COLUMNS[-1] == "TongueOut"
    assert LIVE_LINK_HEADER[-9:] == ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                                     "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
    track = _track()
    path = write_live_link_csv(track, tmp_path / "a.csv")
    assert path.read_text().splitlines()[0] == ",".join(LIVE_LINK_HEADER)
    codes, cols = read_live_link_csv(path)
    assert codes[0] == "00:00:00:05.000" and int(path.read_text().splitlines()[1].split(",")[1]) == 61
    assert np.allclose(cols["jawOpen"], track.expression[:, ICT_NAMES.index("jawOpen")], atol=1e-6)
    assert np.allclose(np.rad2deg(cols["HeadYaw"]), 20 * np.sin(2 * np.pi * track.times - 2 * np.pi * 5 / 30),
                       atol=1e-3)
    assert np.allclose(np.rad2deg(cols["HeadRoll"]), 3.0, atol=1e-3)
    assert np.allclose(np.rad2deg(cols["LeftEyeYaw"]), 15.0, atol=1e-3)  # eyeLookOut_L 0.5 -> 15 deg
    assert np.allclose(cols["RightEyeYaw"], 0.0)
    pca = FaceTrack(**{**vars(track), "expression_names": ()})
    with pytest.raises(NoBlendshapesError):
        write_live_link_csv(pca, tmp_path / "b.csv")


def test_animated_glb_valid(tmp_path: Path):
    from facenet3d.facemodel.native import read_face_model_arrays
    from facenet3d.facemodel.registry import default_model_path

    arrays = read_face_model_arrays(default_model_path())
    track = _track(6)
    path = write_animated_glb(track, arrays, arrays.mean_shape, tmp_path / "anim.glb")
    doc, binary = _read_glb(path)
    anim = doc["animations"][0]
    weights = _accessor(doc, binary, anim["samplers"][0]["output"]).reshape(6, -1)
    times = _accessor(doc, binary, anim["samplers"][0]["input"])
    assert anim["channels"][0]["target"]["path"] == "weights" and anim["samplers"][0]["interpolation"] == "LINEAR"
    assert np.allclose(times[:, 0], track.times, atol=1e-6)
    assert np.allclose(weights, track.expression, atol=1e-6)
    quats = _accessor(doc, binary, anim["samplers"][1]["output"]).reshape(6, 4)
    assert np.allclose(np.abs(quats), np.abs(matrix_to_quaternion(track.rotation)), atol=1e-6)
    assert doc["nodes"][anim["channels"][1]["target"]["node"]]["name"] == "head"
    assert_valid_gltf(path)


def _read_glb(path: Path) -> tuple[dict, bytes]:
    import struct

    data = path.read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    doc = json.loads(data[20:20 + n])
    return doc, data[20 + n + 8:]


def _accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc["type"]]
    return np.frombuffer(binary, "<f4", acc["count"] * width, view.get("byteOffset", 0)).reshape(acc["count"], -1)


def test_torch_video_path_end_to_end(faces_dir: Path, tmp_path: Path):
    """``facenet3d reconstruct`` on a short clip of real photos, with a short landmark-only fit: one
    identity for every frame (through the detector offsets, which 4 frames switch on), the JSON Lines,
    the Live Link CSV and the GLB hold the same numbers. The known answers are the slow test below."""
    from PIL import Image

    from facenet3d.api import FaceReconstructor
    from facenet3d.video import OFFSET_MIN_FRAMES, reconstruct_video
    from tests.onnx_fixtures import real_photos

    frames = tmp_path / "shot"
    frames.mkdir()
    photo = np.array(Image.open(real_photos(faces_dir, 1)[0]).convert("RGB").resize((200, 200)))
    for i in range(OFFSET_MIN_FRAMES + 1):
        Image.fromarray(np.roll(photo, (i, 2 * i), axis=(0, 1))).save(frames / f"{i:03d}.png")
    config = tmp_path / "quick.yaml"
    config.write_text("stages: [landmarks]\nlandmarks: {iterations: 8}\n")
    report = reconstruct_video(frames, tmp_path / "out", FaceReconstructor.from_pretrained("none"),
                               refine=str(config))
    assert report.frames == report.faces == OFFSET_MIN_FRAMES + 1
    lines = [json.loads(s) for s in (report.folder / "frames.jsonl").read_text().splitlines()]
    assert all(ln["identity"] == lines[0]["identity"] for ln in lines)
    codes, cols = read_live_link_csv(report.folder / "animation.csv")
    assert codes == [ln["timecode"] for ln in lines]
    for name in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight"):
        assert np.allclose(cols[name], [ln["blendshapes"][name] for ln in lines], atol=1e-6)
    doc, binary = _read_glb(report.folder / "animation.glb")
    weights = _accessor(doc, binary, doc["animations"][0]["samplers"][0]["output"]).reshape(len(lines), -1)
    got = np.array([[ln["blendshapes"][n] for n in ARKIT_NAMES] for ln in lines])
    assert np.allclose(to_arkit(weights, ICT_NAMES), got, atol=1e-5)


# -- the known-answer clip ------------------------------------------------------------------------------

CLIP_FRAMES = 16
CLIP_SIZE = 224


def _truth(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 53)`` ICT coefficients and ``(n, 3)`` yaw, pitch, roll of the clip."""
    s = np.arange(n) / (n - 1)
    x = np.zeros((n, 53))
    x[:, ICT_NAMES.index("jawOpen")] = 0.45 * np.sin(np.pi * s) ** 2
    x[:, ICT_NAMES.index("eyeBlink_L")] = 0.9 * np.clip(np.sin(2 * np.pi * s), 0, None)
    x[:, ICT_NAMES.index("eyeBlink_R")] = 0.9 * np.clip(np.sin(2 * np.pi * s + 0.6), 0, None)
    x[:, ICT_NAMES.index("mouthSmile_L")] = 0.7 * s
    x[:, ICT_NAMES.index("mouthSmile_R")] = 0.7 * (1 - s) ** 2
    ypr = np.stack([18 * np.sin(2 * np.pi * s), 6 * np.cos(2 * np.pi * s), 4 * np.sin(np.pi * s)], 1)
    return x, ypr


def _render_clip(ict_dir: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write the clip's frames (PNG) rendered from ICT's mean identity; returns its truth."""
    import torch
    from PIL import Image

    from facenet3d.evaluate.synthetic import ICTFaceRenderer
    from facenet3d.render import PinholeCamera, euler_to_matrix, sh_directional, sh_uniform
    from facenet3d.render.color import linear_to_srgb

    r = ICTFaceRenderer(ict_dir, image_size=CLIP_SIZE)
    rng = np.random.default_rng(3)
    albedo = torch.tensor(r._albedo(rng, 0.3)[None], dtype=torch.float32)
    x, ypr = _truth(CLIP_FRAMES)
    folder.mkdir()
    background = torch.full((1, CLIP_SIZE, CLIP_SIZE, 3), 0.2)
    with torch.no_grad():
        verts = r.model.decode(torch.zeros(len(x), r.model.identity_dim), torch.as_tensor(x, dtype=torch.float32))
        centre = verts[0, r.landmarks].mean(0).double().numpy()
        for i in range(len(x)):
            rot = euler_to_matrix(torch.tensor(ypr[i], dtype=torch.float64)).numpy()
            trans = np.array([0.0, 0.0, -650.0]) - rot @ centre
            cam = PinholeCamera.create(0.45 * CLIP_SIZE * 650.0 / 140.0, (CLIP_SIZE, CLIP_SIZE))
            cam_verts = (verts[i].double() @ torch.as_tensor(rot.T) + torch.as_tensor(trans)).float()[None]
            sh = sh_uniform(0.6) + sh_directional(torch.tensor([[0.3, 0.4, 1.0]]), torch.full((1, 1), 0.4))
            out = r.renderer(cam_verts, cam, sh, albedo, specular=torch.full((1, 3), 0.04),
                             roughness=torch.full((1, 1), 0.45), background=background)
            image = (linear_to_srgb(out.image[0]).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(image).save(folder / f"frame_{i:03d}.png")
    return x, ypr


@pytest.mark.slow
def test_known_answer_clip(ict_dir: Path, tmp_path: Path):
    from facenet3d.api import FaceReconstructor
    from facenet3d.video import reconstruct_video

    truth, ypr = _render_clip(ict_dir, tmp_path / "clip")
    rec = FaceReconstructor.from_pretrained("none")
    refine = os.environ.get("FACENET3D_CLIP_REFINE", "fast")  # "landmarks": stage A only (faster, worse)
    report = reconstruct_video(tmp_path / "clip", tmp_path / "out", rec, refine=refine, fps=30.0)
    assert report.faces == CLIP_FRAMES, report
    lines = [json.loads(s) for s in (report.folder / "frames.jsonl").read_text().splitlines()]
    got = np.array([[ln["blendshapes"][n] for n in ARKIT_NAMES] for ln in lines])
    want = to_arkit(truth, ICT_NAMES)
    corr = {}
    for name in ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight"):
        k = ARKIT_NAMES.index(name)
        corr[name] = float(np.corrcoef(got[:, k], want[:, k])[0, 1])
    pose_err = np.abs(np.array([ln["head_rotation_ypr_deg"] for ln in lines]) - ypr)
    print("correlations", corr, "median pose error", np.median(pose_err, 0))
    # The same identity object for every frame.
    assert all(ln["identity"] == lines[0]["identity"] for ln in lines)
    # The CSV and the GLB hold the JSON Lines' numbers.
    codes, cols = read_live_link_csv(report.folder / "animation.csv")
    assert codes == [ln["timecode"] for ln in lines]
    for name in ARKIT_NAMES:
        assert np.allclose(cols[name], got[:, ARKIT_NAMES.index(name)], atol=1e-6)
    assert np.allclose(np.rad2deg(cols["HeadYaw"]), [ln["head_rotation_ypr_deg"][0] for ln in lines], atol=1e-3)
    doc, binary = _read_glb(report.folder / "animation.glb")
    weights = _accessor(doc, binary, doc["animations"][0]["samplers"][0]["output"]).reshape(CLIP_FRAMES, -1)
    assert np.allclose(to_arkit(weights, ICT_NAMES), got, atol=1e-5)
    assert_valid_gltf(report.folder / "animation.glb")
    assert np.median(pose_err, 0).max() <= 3.0, np.median(pose_err, 0)
    assert min(corr.values()) >= 0.9, corr
