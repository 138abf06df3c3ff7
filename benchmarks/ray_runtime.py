"""Faces per second of the Ray engine against the single-process runtime, on this machine.

    python benchmarks/ray_runtime.py [--photos 48] [--threads 1] [--num-workers 2] [--variant resnet18]
                                     [--onnx FILE] [--ray-address ADDR] [--json out.json]

The same photos (LFW, about 250 px, one face each) and the same ONNX Runtime threads per
session go through:

1. **single process**: ``python -m facenet3d.infer``'s loop (:func:`facenet3d.infer.batch.reconstruct_photos`), one
   session, photo folders written;
2. **Ray, cold**: ``--engine ray`` (:func:`facenet3d.infer.ray_engine.reconstruct_photos_on_ray`) on a Ray
   instance just started: the first run's worker processes import the runtime, build MediaPipe's
   graphs and load the face model and the graph;
3. **Ray, warm**: the same run again (``--overwrite``) on the same instance: task workers are
   reused, the actors are started again (one pool per run);
4. **Ray, table**: a warm run writing the face table (``--table``: no meshes, textures or
   overlays) instead of folders.

Each run is timed whole (wall clock, outputs written); the overhead per photo is the Ray run's
time less the single-process run's, divided by the photos. Starting the local instance is
timed apart. The graph is an untrained export of ``--variant`` (speed does not depend on the
weights) unless ``--onnx`` is given. The machine is shared: its load average is printed with
each figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared"))


def export_untrained(variant: str, folder: Path) -> Path:
    """An untrained ``variant`` exported with the default face model (torch: the benchmark only)."""
    from facenet3d.network import create_regressor
    from facenet3d.network.weights import face_model_for
    from facenet3d.onnx import export_onnx

    model = face_model_for("default")
    return export_onnx(create_regressor(variant, model).eval(), model, folder / f"{variant}.onnx",
                       weights={"source": f"untrained:{variant}"})


def timed_run(name: str, photos: int, fn) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    report = fn()
    seconds = time.perf_counter() - t0
    assert not report.failures, report.failures[:3]
    return {"run": name, "photos": photos, "faces": report.faces, "seconds": round(seconds, 2),
            "faces_per_s": round(report.faces / seconds, 2), "load_start": round(load, 1),
            "load_end": round(os.getloadavg()[0], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=48, help="LFW photos (default: 48)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per session (default: 1)")
    p.add_argument("--num-workers", type=int, default=2, help="Ray regressor actors (default: 2)")
    p.add_argument("--variant", default="resnet18", help="regressor variant to export untrained (default: resnet18)")
    p.add_argument("--onnx", default=None, help="an exported graph instead")
    p.add_argument("--ray-address", default=None, help="a running Ray cluster (default: a local instance)")
    p.add_argument("--json", default=None, help="write the figures here too")
    args = p.parse_args()

    from facenet3d.infer.batch import reconstruct_photos
    from facenet3d.infer.pipeline import RuntimeFaceModel
    from facenet3d.infer.ray_engine import RayRunOptions, reconstruct_photos_on_ray, start_ray
    from facenet3d.infer.session import RegressorSession

    from facenet3d.batch import quiet_detector
    from facenet3d.landmarks.detect import FaceDetector

    photos = sorted((SHARED / "data/faces/lfw-expressions").glob("*.jpg"))[::3][:args.photos]
    work = Path(tempfile.mkdtemp(prefix="ray_runtime_"))
    onnx = Path(args.onnx) if args.onnx else export_untrained(args.variant, work)
    session = RegressorSession(onnx, threads=args.threads, provider="cpu")
    model = RuntimeFaceModel.load("default", session.info)
    print(f"{len(photos)} photos, graph {onnx.name} (crop {session.crop_size}), {args.threads} ONNX Runtime "
          f"thread(s) per session, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    rows = []
    detector = quiet_detector(FaceDetector())
    rows.append(timed_run("single process", len(photos), lambda: reconstruct_photos(
        photos, work / "single", session, model, detector, max_faces=None, quiet=True)))

    t0 = time.perf_counter()
    started = start_ray(args.ray_address, args.num_workers, args.threads)
    ray_start = time.perf_counter() - t0
    options = RayRunOptions(address=args.ray_address, num_workers=args.num_workers)

    def on_ray(out: str, table: bool = False):
        opts = RayRunOptions(address=options.address, num_workers=options.num_workers, table=table)
        return lambda: reconstruct_photos_on_ray(photos, work / out, onnx, model, session.info, options=opts,
                                                 threads=args.threads, provider="cpu", overwrite=True, quiet=True)

    try:
        rows.append(timed_run(f"Ray, cold ({args.num_workers} actors)", len(photos), on_ray("ray")))
        rows.append(timed_run(f"Ray, warm ({args.num_workers} actors)", len(photos), on_ray("ray")))
        rows.append(timed_run(f"Ray, table ({args.num_workers} actors)", len(photos), on_ray("table", True)))
    finally:
        if started:
            import ray

            ray.shutdown()
    base = rows[0]["seconds"]
    for r in rows:
        r["overhead_ms_per_photo"] = round((r["seconds"] - base) / r["photos"] * 1e3, 1)
    print(f"Ray local instance started in {ray_start:.1f} s (not in the runs below)")
    print(f"{'run':<26} {'faces':>5} {'s':>7} {'faces/s':>8} {'overhead ms/photo':>18} {'load start/end':>15}")
    for r in rows:
        print(f"{r['run']:<26} {r['faces']:>5} {r['seconds']:>7.2f} {r['faces_per_s']:>8.2f} "
              f"{r['overhead_ms_per_photo']:>18.1f} {r['load_start']:>7.1f}/{r['load_end']:<7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"ray_start_s": round(ray_start, 2), "threads": args.threads,
                                               "cores": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
