"""Frames per second of the ONNX video path with the face tracked against detecting it in every frame.

    python benchmarks/video.py --onnx fast.onnx [--threads 2] [--frames 300] [--photo PHOTO] [--json out.json]

The clip: a real photo (default: AFLW2000-3D's ``image00051.jpg`` from the shared data, a frontal
face with its shoulders) filling the height of a 640x480 frame, moving as a head does in front of
a webcam (sliding +-40 px, bobbing +-15 px, rolling +-6 degrees, nearing and receding +-8 %,
smoothly, at 30 fps), written as an MPEG-4 file so that decoding is part of the measure. The
tracked run's answers are compared with the baseline's (landmarks, head angles).

1. **Frames/s**, :func:`facenet3d.infer.video.reconstruct_video` end to end (decode, detection or tracking,
   alignment, the graph at batch 1, photo pose, smoothing, blendshapes, JSON Lines, the Live Link
   CSV and animated GLB at the end), no overlay video: tracked (the detector every
   ``--redetect-every`` frames and when tracking is lost) against the baseline that detects in
   every frame, in the same process, alternating, best of ``--runs``. The machine's load average
   is printed before and after: a background job shares the 2 cores.
2. **Per-stage cost, one thread** (ONNX Runtime with 1 thread, ``OMP_NUM_THREADS=1`` advised):
   wall and process-CPU milliseconds per frame of each stage, median of ``--repeat`` runs. The
   CPU time is what the stage costs an idle core, so ``1000 / sum`` is the frame rate one idle core
   would sustain (MediaPipe's own worker threads are counted in the CPU time too).

What an overlay video adds (rendering the reconstruction over each frame and encoding it) is
printed separately: it is a file for people to look at, not part of the capture.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import timed  # noqa: E402  (benchmarks/timing.py)

SHARED = Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared"))
FRAME_SIZE = (640, 480)


def make_clip(photo: Path, path: Path, frames: int, fps: float = 30.0) -> None:
    """Write the moving-photo clip (see the module docstring) as an MPEG-4 file."""
    import cv2

    from facenet3d.landmarks.image_io import read_image

    pixels = read_image(photo).pixels
    w, h = FRAME_SIZE
    base = h / max(pixels.shape[:2])  # the face spans about half the frame's height, as before a webcam
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit("OpenCV cannot write MPEG-4 here")
    centre = np.array(pixels.shape[1::-1], np.float64) / 2
    for i in range(frames):
        t = i / fps
        s = base * (1 + 0.08 * np.sin(2 * np.pi * t / 5.0))
        a = np.deg2rad(6 * np.sin(2 * np.pi * t / 3.0))
        shift = np.array([40 * np.sin(2 * np.pi * t / 4.0), 15 * np.sin(2 * np.pi * t / 2.5)])
        rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        m = np.concatenate([rot, (np.array([w, h]) / 2 + shift - rot @ centre)[:, None]], 1)
        frame = cv2.warpAffine(pixels, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def run_clip(clip: Path, out: Path, session, model, detector, redetect_every: int, overlay: bool = False) -> dict:
    from facenet3d.infer.video import reconstruct_video

    start_cpu = time.process_time()
    r = reconstruct_video(clip, out, session, model, detector, overlay=overlay, quiet=True,
                          redetect_every=redetect_every)
    cpu = time.process_time() - start_cpu
    lines = [json.loads(s) for s in (r.folder / "frames.jsonl").read_text().splitlines()]
    return {"frames": r.frames, "faces": r.faces, "detections": r.detections, "seconds": r.seconds,
            "frames_per_s": r.frames / r.seconds, "cpu_ms_per_frame": cpu / r.frames * 1e3,
            "landmarks": [ln.get("landmarks68_image_px") for ln in lines],
            "ypr": [ln.get("rotation_ypr_deg") for ln in lines]}


def agreement(a: dict, b: dict) -> dict:
    """How far two runs' per-frame answers are apart: RMS landmark distance (px) and median
    absolute yaw/pitch/roll difference (degrees), over frames where both found the face."""
    both = [i for i, (x, y) in enumerate(zip(a["landmarks"], b["landmarks"], strict=True)) if x and y]
    la, lb = (np.array([r["landmarks"][i] for i in both]) for r in (a, b))
    ya, yb = (np.array([r["ypr"][i] for i in both]) for r in (a, b))
    return {"frames": len(both), "landmarks_rms_px": float(np.sqrt(((la - lb) ** 2).sum(-1).mean())),
            "ypr_median_abs_deg": np.median(np.abs(ya - yb), 0).round(3).tolist()}


def stage_costs(clip: Path, onnx: Path, model_spec: str, detector, repeat: int) -> dict:
    """Per-frame wall and CPU ms of each stage with one ONNX thread."""
    import cv2
    from facenet3d.infer.pipeline import RuntimeFaceModel, crops_to_input, detect_faces, place_faces
    from facenet3d.infer.session import RegressorSession
    from facenet3d.infer.video import PoseSmoother, frame_source

    from facenet3d.landmarks.align import crop_image

    session = RegressorSession(onnx, threads=1, provider="cpu")
    model = RuntimeFaceModel.load(model_spec, session.info)
    capture = cv2.VideoCapture(str(clip))

    def decode() -> None:
        ok, bgr = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = capture.read()
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    frames, _ = frame_source(clip)
    _, _, rgb = next(frames)
    frames.close()
    s = session.crop_size
    face = detect_faces(detector, rgb, s, 1)[0]
    x = crops_to_input(face.crop[None])
    outputs = session.run(x)
    placed = place_faces(outputs, [face], model, s, rgb.shape[:2])[0]
    smoother = PoseSmoother()
    clock = iter(np.arange(1e6) / 30.0)

    def record() -> None:
        rot, trans, camera, expression = smoother(placed, float(next(clock)))
        lm = model.decode_landmarks(placed.params["identity"], expression)
        rec = placed.params_record(model.name, model.arrays.expression_names)
        rec["landmarks68"] = (lm @ rot.T + trans).tolist()
        json.dumps(rec)

    stages = {"decode 640x480 frame": decode,
              "detect (MediaPipe) + align": lambda: detect_faces(detector, rgb, s, 1),
              "tracked crop": lambda: crop_image(rgb, face.forward, s),
              "ONNX graph, batch 1": lambda: session.run(x),
              "photo pose (place)": lambda: place_faces(outputs, [face], model, s, rgb.shape[:2]),
              "smooth + record + JSON": record}
    costs = {}
    for name, fn in stages.items():
        wall, best, cpu = timed(fn, repeat)
        costs[name] = {"wall_ms": wall, "min_wall_ms": best, "cpu_ms": cpu}
    capture.release()
    return costs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True, help="graph of `facenet3d export-onnx --weights fast`")
    p.add_argument("--model", default="default", help="face model (default: the graph's)")
    p.add_argument("--photo", type=Path, default=None)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the frames/s runs")
    p.add_argument("--redetect-every", type=int, default=None, help="tracked run's setting (default: the runtime's)")
    p.add_argument("--runs", type=int, default=2, help="runs of each path, alternating; the best is reported")
    p.add_argument("--repeat", type=int, default=50, help="repeats per stage")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()

    from facenet3d.infer.pipeline import RuntimeFaceModel
    from facenet3d.infer.session import RegressorSession
    from facenet3d.infer.video import REDETECT_EVERY

    from facenet3d.batch import quiet_detector
    from facenet3d.landmarks.detect import FaceDetector

    redetect = a.redetect_every or REDETECT_EVERY
    photo = a.photo or SHARED / "data/aflw2000-3d/dev/image00051.jpg"
    detector = quiet_detector(FaceDetector(max_faces=1), verbose=False)
    session = RegressorSession(a.onnx, threads=a.threads, provider="cpu")
    model = RuntimeFaceModel.load(a.model, session.info)
    load_before = os.getloadavg()
    report: dict = {"photo": str(photo), "frame_size": FRAME_SIZE, "threads": a.threads, "onnx": str(a.onnx),
                    "face_model": session.info.face_model, "load_before": load_before}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(photo, clip, a.frames)
        run_clip(clip, Path(tmp) / "warm", session, model, detector, redetect)  # graphs and caches warm
        runs: dict[str, list[dict]] = {"tracked": [], "detect every frame": []}
        for _ in range(a.runs):
            runs["tracked"].append(run_clip(clip, Path(tmp) / "t", session, model, detector, redetect))
            runs["detect every frame"].append(run_clip(clip, Path(tmp) / "d", session, model, detector, 1))
        best = {k: max(v, key=lambda r: r["frames_per_s"]) for k, v in runs.items()}
        agree = agreement(best["tracked"], best["detect every frame"])
        for r in (x for v in runs.values() for x in v):
            del r["landmarks"], r["ypr"]
        overlay = run_clip(clip, Path(tmp) / "o", session, model, detector, redetect, overlay=True)
        load_after = os.getloadavg()
        costs = stage_costs(clip, a.onnx, a.model, detector, a.repeat)
    del overlay["landmarks"], overlay["ypr"]
    report.update({"runs": runs, "best": best, "with_overlay_video": overlay, "tracked_vs_detected": agree,
                   "load_after": load_after, "stages_one_thread": costs})
    print(f"{a.frames} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} from {photo.name}, face model "
          f"{session.info.face_model}, ONNX Runtime {a.threads} threads; load average before "
          + " ".join(f"{v:.2f}" for v in load_before) + ", after " + " ".join(f"{v:.2f}" for v in load_after))
    print(f"{'path':34s} {'frames/s':>9s} {'CPU ms/frame':>13s} {'detections':>11s}")
    for name, r in best.items():
        label = f"{name} (every {redetect})" if name == "tracked" else name
        print(f"{label:34s} {r['frames_per_s']:9.1f} {r['cpu_ms_per_frame']:13.1f} {r['detections']:11d}")
    print(f"{'tracked + overlay video':34s} {overlay['frames_per_s']:9.1f} {overlay['cpu_ms_per_frame']:13.1f} "
          f"{overlay['detections']:11d}")
    print(f"tracked against detected in every frame: landmarks {agree['landmarks_rms_px']:.2f} px RMS, "
          f"yaw/pitch/roll median |difference| {agree['ypr_median_abs_deg']} degrees over {agree['frames']} frames")
    print("\nper-frame stage cost, 1 ONNX thread      wall ms (min)    CPU ms")
    for name, c in costs.items():
        print(f"  {name:38s} {c['wall_ms']:7.2f} ({c['min_wall_ms']:5.2f}) {c['cpu_ms']:8.2f}")
    detect = costs["detect (MediaPipe) + align"]["cpu_ms"]
    common = sum(c["cpu_ms"] for n, c in costs.items() if n not in ("detect (MediaPipe) + align", "tracked crop"))
    tracked = common + costs["tracked crop"]["cpu_ms"] + detect / redetect
    print(f"one idle core, from the CPU costs: tracked {1e3 / tracked:.0f} frames/s ({tracked:.1f} ms), "
          f"detect every frame {1e3 / (common + detect):.0f} frames/s ({common + detect:.1f} ms)")
    report["idle_core_estimate"] = {"tracked_ms": tracked, "detect_every_frame_ms": common + detect}
    if a.json:
        from facenet3d.export.jsonfile import write_json

        write_json(report, a.json)


if __name__ == "__main__":
    main()
