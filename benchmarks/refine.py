"""Refinement speed and fidelity: seconds per face for ``fast`` and ``full``, the landmark error
and the face-region PSNR/SSIM of the re-render against the photo after each stage.

    python benchmarks/refine.py [--photos DIR] [--n 20] [--threads 2] [--weights default|none] [--json out.json]

Photos: ``--n`` spread evenly over the sorted ``*.jpg`` of ``--photos`` (UTKFace by default), with
the default face model. Stages compared on the same photos: the mean face posed from the
landmarks (uniform light matched to the skin brightness), A (landmarks), A+B (photometric, the
``fast`` preset) and A+B+C (UV maps, ``full``). PSNR/SSIM are taken on the photo's skin mask (the
same pixels for every stage; skin the render misses counts as black), in sRGB, at the crop size
(224 px), with per-pixel shading; the landmark error is the mean distance of the 68 fitted
landmarks to the detected ones, in pixels of the 224 px crop. Seconds per face are wall-clock
medians (and process CPU time, which on a shared machine is the steadier figure) of ``refine``
alone (detection and alignment apart), leaving out the first photo, which pays one-off set-up.
The machine's load average is printed with the figures.

With ``--weights`` (the shipped regressor ``default`` unless ``none``) the same photos are also
refined as ``facenet3d reconstruct`` does, from the regressor's answer (whose landmarks the
refinement then keeps to): rows ``regressor``, ``reg+fast`` and ``reg+full``, timed the same way
(the regressor's own time apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# As facenet3d does on import: OpenMP threads that spin while waiting slow PyTorch down several
# times on a busy machine. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facenet3d.api import FaceReconstructor  # noqa: E402
from facenet3d.decode import crop_camera, decode_face  # noqa: E402
from facenet3d.evaluate.photometric import render_fidelity  # noqa: E402
from facenet3d.facemodel import load_face_model  # noqa: E402
from facenet3d.landmarks.cache import process_photo  # noqa: E402
from facenet3d.landmarks.detect import FaceDetector  # noqa: E402
from facenet3d.refine import FitTarget, initial_lighting, initial_params, load_refine_config, refine  # noqa: E402
from facenet3d.render import Renderer  # noqa: E402


def fidelity(model, renderer, params, target: FitTarget, maps=None) -> tuple[float, float]:
    f = render_fidelity(model, renderer, params, target, maps)
    return float(f.psnr[0]), float(f.ssim[0])


def landmark_error(model, params, target: FitTarget) -> float:
    """Mean pixel distance of the fitted iBUG-68 landmarks to the detected ones."""
    with torch.no_grad():
        dec = decode_face(model, params, crop_camera(target.size), landmarks_only=True)
        return float((dec.landmarks68 - target.landmarks68).norm(dim=-1).mean())


def timed_refine(model, target, config, renderer, start=None):
    t0, c0 = time.perf_counter(), time.process_time()
    result = refine(model, target, config, start=start, renderer=renderer)
    return result, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    shared = Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=shared / "data/faces/utkface")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="default", help="regressor for the regressor-start rows; none: skip them")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_face_model("default")
    reconstructor = None
    if a.weights != "none":
        reconstructor = FaceReconstructor.from_pretrained(a.weights)
        if reconstructor.model.metadata.get("name") != model.metadata.get("name"):
            raise SystemExit(f"regressor {a.weights!r} is for face model {reconstructor.model_name!r}, not the default")
    pixel = Renderer.from_model(model, shading="pixel")  # for measuring: per-pixel shading
    renderer = Renderer.from_model(model)  # what reconstruct uses
    landmarks_only, fast, full = (load_refine_config(n) for n in ("landmarks", "fast", "full"))
    det = FaceDetector()
    photos = sorted(a.photos.glob("*.jpg"))
    photos = [photos[i] for i in np.linspace(0, len(photos) - 1, a.n).astype(int)]
    load_before = os.getloadavg()
    rows: dict[str, list[tuple[float, float, float]]] = {"mean": [], "A": [], "A+B": [], "A+B+C": []}
    times: dict[str, list[tuple[float, float]]] = {"detect+align": [], "fast": [], "full": []}
    if reconstructor is not None:
        rows.update({"regressor": [], "reg+fast": [], "reg+full": []})
        times.update({"reg+fast": [], "reg+full": []})
    for i, path in enumerate(photos):
        t0, c0 = time.perf_counter(), time.process_time()
        arrays = process_photo(path, det)[1]
        times["detect+align"].append((time.perf_counter() - t0, time.process_time() - c0))
        target = FitTarget.from_arrays(arrays["crop"], arrays["landmarks478"], arrays["landmarks68"],
                                       arrays["skin_mask"])
        start = initial_lighting(model, target, initial_params(model, target))
        rows["mean"].append((*fidelity(model, pixel, start, target), landmark_error(model, start, target)))
        a_params = refine(model, target, landmarks_only, renderer=renderer).params
        rows["A"].append((*fidelity(model, pixel, initial_lighting(model, target, a_params), target),
                          landmark_error(model, a_params, target)))
        b, t_fast, c_fast = timed_refine(model, target, fast, renderer)
        rows["A+B"].append((*fidelity(model, pixel, b.params, target), landmark_error(model, b.params, target)))
        c, t_full, c_full = timed_refine(model, target, full, renderer)
        rows["A+B+C"].append((*fidelity(model, pixel, c.params, target, c.maps),
                              landmark_error(model, c.params, target)))
        timed = {"fast": (t_fast, c_fast), "full": (t_full, c_full)}
        if reconstructor is not None:
            reg = reconstructor.regress(target.image)
            rows["regressor"].append((*fidelity(model, pixel, reg, target), landmark_error(model, reg, target)))
            for name, config in (("reg+fast", fast), ("reg+full", full)):
                r, t_r, c_r = timed_refine(model, target, config, renderer, start=reg)
                rows[name].append((*fidelity(model, pixel, r.params, target, r.maps if config is full else None),
                                   landmark_error(model, r.params, target)))
                timed[name] = (t_r, c_r)
        if i > 0:  # the first fit pays one-off initialisation; leave it out of the timings
            for name, value in timed.items():
                times[name].append(value)
        print(f"{i + 1}/{len(photos)} {path.name}: " + ", ".join(f"{k} {v[0]:.2f} s" for k, v in timed.items())
              + f", load {os.getloadavg()[0]:.2f}", flush=True)
    load_after = os.getloadavg()
    print(f"{len(photos)} photos from {a.photos}, {a.threads} threads, face model "
          f"{model.metadata.get('name', '?')}; load average (1/5/15 min) {load_before[0]:.2f}/"
          f"{load_before[1]:.2f}/{load_before[2]:.2f} before, {load_after[0]:.2f}/{load_after[1]:.2f}/"
          f"{load_after[2]:.2f} after")
    print("stage      PSNR dB   SSIM    landmarks px")
    for name, vals in rows.items():
        print(f"{name:9s}  {statistics.mean(v[0] for v in vals):7.2f}  {statistics.mean(v[1] for v in vals):6.4f}"
              f"  {statistics.mean(v[2] for v in vals):6.2f}")
    print("seconds per face: wall median, wall mean, CPU median")
    for name, vals in times.items():
        wall = [v[0] for v in vals]
        print(f"{name:13s} {statistics.median(wall):6.3f}  {statistics.mean(wall):6.3f}  "
              f"{statistics.median(v[1] for v in vals):6.3f}")
    if a.json:
        a.json.write_text(json.dumps({
            "photos": [p.name for p in photos], "threads": a.threads, "weights": a.weights,
            "load_before": load_before,
            "load_after": load_after,
            "fidelity": {k: [list(v) for v in vals] for k, vals in rows.items()},
            "seconds": {k: [list(v) for v in vals] for k, vals in times.items()}}, indent=1))


if __name__ == "__main__":
    main()
