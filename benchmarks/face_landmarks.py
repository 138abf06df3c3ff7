"""Agreement and speed of the two landmark back-ends: the mediapipe package vs its ONNX conversion.

    python benchmarks/face_landmarks.py [--per-folder 200]

For each of ``shared/data/faces/{utkface,aflw-crops,lfw-expressions}`` a fixed random sample
(seed 0) goes through :class:`facenet3d.landmarks.detect.FaceDetector` (the whole cascade) with
``backend="mediapipe"`` (the baseline) and ``backend="onnx"`` in the same process. Printed per
folder: photos where both / only one back-end found a face, same face count, the median and 95th
percentile over photos of the per-photo median point distance of the largest face's 478 points
(pixels, and % of the inter-ocular distance: outer eye corners 33-263), the iris centres'
median distance, the 68-point median, score difference, and the median time per photo (one thread
each). Needs the full install (mediapipe).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FOLDERS = ("utkface", "aflw-crops", "lfw-expressions")


def shared_root() -> Path:
    return Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared")).resolve()


def run(detector, image) -> tuple[list, float]:
    from facenet3d.errors import NoFaceError

    start = time.perf_counter()
    try:
        faces = detector.detect(image)
    except NoFaceError:
        faces = []
    return faces, (time.perf_counter() - start) * 1e3


def bench_folder(folder: Path, n: int, detectors: dict) -> None:
    from facenet3d.landmarks.image_io import load_image

    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = random.Random(0).sample(photos, min(n, len(photos)))
    found = {"both": 0, "mediapipe only": 0, "onnx only": 0, "neither": 0}
    same_count, err_px, err_iod, err_iris, err68, dscore = 0, [], [], [], [], []
    ms: dict[str, list[float]] = {k: [] for k in detectors}
    for path in photos:
        image = load_image(path)
        res = {}
        for name, det in detectors.items():
            res[name], t = run(det, image)
            ms[name].append(t)
        a, b = res["mediapipe"], res["onnx"]
        found["both" if a and b else "mediapipe only" if a else "onnx only" if b else "neither"] += 1
        same_count += len(a) == len(b)
        if a and b:
            la, lb = a[0].landmarks478, b[0].landmarks478
            d = np.linalg.norm(la[:, :2] - lb[:, :2], axis=1)
            iod = float(np.linalg.norm(la[33, :2] - la[263, :2]))
            err_px.append(np.median(d))
            err_iod.append(np.median(d) / iod * 100)
            err_iris.append(np.median(d[[468, 473]]))
            err68.append(np.median(np.linalg.norm(a[0].landmarks68 - b[0].landmarks68, axis=1)))
            dscore.append(abs(a[0].score - b[0].score))
    q = lambda v, p: float(np.percentile(v, p)) if v else float("nan")  # noqa: E731
    print(f"{folder.name} ({len(photos)} photos): {found}; same face count {same_count}/{len(photos)}")
    print(f"  478-point distance, median over photos of the per-photo median: {q(err_px, 50):.3f} px "
          f"({q(err_iod, 50):.3f} % IOD), 95th pct {q(err_px, 95):.3f} px ({q(err_iod, 95):.3f} % IOD)")
    print(f"  iris centres {q(err_iris, 50):.3f} px, iBUG-68 {q(err68, 50):.3f} px, "
          f"|score difference| median {q(dscore, 50):.4f}")
    print("  time per photo (median ms): " + ", ".join(f"{k} {np.median(v):.1f}" for k, v in ms.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-folder", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from facenet3d.batch import quiet_detector
    from facenet3d.landmarks.detect import FaceDetector

    print(f"load average {os.getloadavg()[0]:.2f}")
    detectors = {name: quiet_detector(FaceDetector(backend=name)) for name in ("mediapipe", "onnx")}
    for folder in FOLDERS:
        bench_folder(shared_root() / "data" / "faces" / folder, args.per_folder, detectors)


if __name__ == "__main__":
    main()
