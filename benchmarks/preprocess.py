"""Throughput and detection rate of ``facenet3d preprocess`` on the shared photo folders.

    python benchmarks/preprocess.py [--per-folder 300] [--workers N] [--nme]

For each of ``shared/data/faces/{utkface,aflw-crops,lfw-expressions}`` a fixed random sample
(seed 0) is preprocessed into a fresh temporary cache with the real command path
(:func:`facenet3d.landmarks.cache.preprocess`: decoding, detection cascade, alignment, masks,
shard writing); the script prints photos per second (wall clock, worker start-up included)
and the share of photos with a face. ``--nme`` adds the 68-point NME of the MediaPipe
landmarks on ``shared/data/aflw2000-3d/dev`` (box-normalised, per yaw bin), for the table in
:mod:`facenet3d.landmarks.ibug68`. Budget (design brief): >= 40 photos/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FOLDERS = ("utkface", "aflw-crops", "lfw-expressions")


def shared_root() -> Path:
    return Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared")).resolve()


def bench_folder(folder: Path, n: int, workers: int | None, size: int) -> dict:
    from facenet3d.landmarks.image_io import collect_photos, preprocess

    photos = collect_photos([folder])
    random.Random(0).shuffle(photos)
    sample = photos[:n]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = preprocess(sample, tmp, size=size, workers=workers, progress=False)
        dt = time.perf_counter() - t0
    return {"folder": folder.name, "photos": len(sample), "cached": report.cached,
            "detection_rate": round(report.cached / len(sample), 4), "seconds": round(dt, 2),
            "photos_per_s": round(len(sample) / dt, 1),
            "failures": [f["error"] for f in report.failed][:5]}


def aflw2000_nme(root: Path) -> dict:
    import scipy.io as sio

    from facenet3d.errors import NoFaceError
    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
    from facenet3d.landmarks.image_io import read_image

    common = np.array([127, 234, 132, 58, 172, 150, 149, 148, 152, 377, 378, 379, 397, 288, 361, 454, 356]
                      + list(IBUG68_FROM_MEDIAPIPE[17:55]) + [405] + list(IBUG68_FROM_MEDIAPIPE[56:59])
                      + [181] + list(IBUG68_FROM_MEDIAPIPE[60:]))
    det = FaceDetector()
    files = sorted(root.glob("*.jpg"))
    lms, gts, yaws, missed = [], [], [], 0
    for f in files:
        mat = sio.loadmat(f.with_suffix(".mat"))
        gt = mat["pt3d_68"][:2].T
        try:
            faces = det.detect(read_image(f))
        except NoFaceError:
            missed += 1
            continue
        face = min(faces, key=lambda fc: np.linalg.norm(fc.landmarks68.mean(0) - gt.mean(0)))
        lms.append(face.landmarks478[:, :2])
        gts.append(gt)
        yaws.append(abs(np.degrees(mat["Pose_Para"][0, 1])))
    lm, gt, yaw = np.array(lms), np.array(gts), np.array(yaws)
    norm = np.sqrt(np.prod(gt.max(1) - gt.min(1), axis=1))
    out = {"images": len(files), "detected": len(lms), "missed": missed}
    for name, table in (("facenet3d", IBUG68_FROM_MEDIAPIPE), ("common", common)):
        e = (np.linalg.norm(lm[:, table] - gt, axis=-1) / norm[:, None]).mean(1)
        bins = [float(e[(yaw >= a) & (yaw < b)].mean() * 100) for a, b in ((0, 30), (30, 60), (60, 91))]
        out[name] = {"nme_bins_pct": [round(b, 2) for b in bins],
                     "nme_mean_pct": round(float(np.mean(bins)), 2)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-folder", type=int, default=300)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--nme", action="store_true", help="also measure NME on AFLW2000-3D dev")
    args = p.parse_args()
    root = shared_root() / "data"
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    results = []
    for name in FOLDERS:
        r = bench_folder(root / "faces" / name, args.per_folder, args.workers, args.size)
        results.append(r)
        print(json.dumps(r), flush=True)
    total = sum(r["photos"] for r in results)
    secs = sum(r["seconds"] for r in results)
    print(json.dumps({"all": {"photos": total, "photos_per_s": round(total / secs, 1),
                              "detection_rate": round(sum(r["cached"] for r in results) / total, 4)}}))
    if args.nme:
        print(json.dumps({"aflw2000-3d": aflw2000_nme(root / "aflw2000-3d" / "dev")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
