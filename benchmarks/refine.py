"""Refinement speed and fidelity: seconds per face for ``fast`` and ``full`` and the face-region
PSNR/SSIM of the re-render against the photo after each stage.

    python benchmarks/refine.py [--photos DIR] [--n 50] [--threads 2]

Stages compared on the same photos (UTKFace by default): the mean face posed from the
landmarks (uniform light matched to the skin brightness), A (landmarks), A+B (photometric)
and A+B+C (UV maps). PSNR/SSIM are taken on the photo's skin mask (the same pixels for every
stage; skin the render misses counts as black), in sRGB, at the crop size (224 px).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from facenet3d.evaluate.photometric import render_fidelity
from facenet3d.facemodel import load_face_model
from facenet3d.landmarks.cache import process_photo
from facenet3d.landmarks.detect import FaceDetector
from facenet3d.refine import FitTarget, initial_lighting, initial_params, load_refine_config, refine
from facenet3d.render import Renderer


def fidelity(model, renderer, params, target: FitTarget, maps=None) -> tuple[float, float]:
    f = render_fidelity(model, renderer, params, target, maps)
    return float(f.psnr[0]), float(f.ssim[0])


def main() -> None:
    shared = Path(os.environ.get("FACENET3D_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=shared / "data/faces/utkface")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_face_model("default")
    pixel = Renderer.from_model(model, shading="pixel")  # for measuring: per-pixel shading
    renderer = Renderer.from_model(model)  # what reconstruct uses
    landmarks_only, fast, full = (load_refine_config(n) for n in ("landmarks", "fast", "full"))
    det = FaceDetector()
    photos = sorted(a.photos.glob("*.jpg"))
    photos = [photos[i] for i in np.linspace(0, len(photos) - 1, a.n).astype(int)]
    rows: dict[str, list[tuple[float, float]]] = {"mean": [], "A": [], "A+B": [], "A+B+C": []}
    times: dict[str, list[float]] = {"detect+align": [], "fast": [], "full": []}
    warm = True
    for path in photos:
        t0 = time.perf_counter()
        arrays = process_photo(path, det)[1]
        times["detect+align"].append(time.perf_counter() - t0)
        target = FitTarget.from_arrays(arrays["crop"], arrays["landmarks478"], arrays["landmarks68"],
                                       arrays["skin_mask"])
        start = initial_lighting(model, target, initial_params(model, target))
        rows["mean"].append(fidelity(model, pixel, start, target))
        a_params = refine(model, target, landmarks_only, renderer=renderer).params
        rows["A"].append(fidelity(model, pixel, initial_lighting(model, target, a_params), target))
        t0 = time.perf_counter()
        b = refine(model, target, fast, renderer=renderer)
        t_fast = time.perf_counter() - t0
        rows["A+B"].append(fidelity(model, pixel, b.params, target))
        t0 = time.perf_counter()
        c = refine(model, target, full, renderer=renderer)
        t_full = time.perf_counter() - t0
        rows["A+B+C"].append(fidelity(model, pixel, c.params, target, c.maps))
        if warm:  # the first fit pays one-off initialisation; leave it out of the timings
            warm = False
            continue
        times["fast"].append(t_fast)
        times["full"].append(t_full)
    print(f"{len(photos)} photos from {a.photos}, {a.threads} threads")
    print("stage     PSNR dB   SSIM")
    for name, vals in rows.items():
        print(f"{name:8s}  {statistics.mean(v[0] for v in vals):7.2f}  {statistics.mean(v[1] for v in vals):6.4f}")
    print("seconds per face (median, mean)")
    for name, vals in times.items():
        print(f"{name:13s} {statistics.median(vals):6.3f}  {statistics.mean(vals):6.3f}")


if __name__ == "__main__":
    main()
