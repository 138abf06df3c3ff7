"""Speed of the whole pipeline per stage, and faces per second: what ``facenet3d reconstruct`` costs.

    python benchmarks/pipeline.py [--photos DIR] [--n 20] [--refine fast] [--threads 2] [--json out.json]

Stages, timed on each photo (median and mean over the photos after the first, which pays the
one-off start-up):

- ``load``: decoding the photo (:func:`facenet3d.landmarks.read_image`);
- ``detect``: MediaPipe detection + 478 landmarks (the detector's own time);
- ``align``: the aligned crop, its landmarks and masks (:meth:`FaceReconstructor.reconstruct`'s
  ``detect_align`` less ``detect``);
- ``regress``: the regressor's forward pass (0 when no weights are installed);
- ``refine``: the refinement stages of ``--refine`` (``landmarks``, ``photometric``, ``maps``);
- ``export``: mesh, textures, records and overlay built and written as ``facenet3d reconstruct``
  writes them (OBJ + MTL + PNG maps, GLB, JSON, overlay PNG) into a temporary folder.

``faces/s`` is photos over the summed time of all stages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facenet3d.api import MAX_DECODE_SIDE, FaceReconstructor, face_result
from facenet3d.evaluate.common import evenly_spaced, write_report
from facenet3d.export.bundle import write_image_results
from facenet3d.landmarks.detect import FaceDetector
from facenet3d.landmarks.image_io import read_image

STAGES = ("load", "detect", "align", "regress", "refine", "export")
REFINE_STAGES = ("landmarks", "photometric", "maps")


class TimedDetector(FaceDetector):
    """A :class:`FaceDetector` that remembers how long its last :meth:`detect` took."""

    last_seconds: float = 0.0

    def detect(self, image, source=None):
        t0 = time.perf_counter()
        try:
            return super().detect(image, source)
        finally:
            self.last_seconds = time.perf_counter() - t0


def time_photo(rec: FaceReconstructor, detector: TimedDetector, path: Path, refine: str, out: Path) -> dict:
    """Seconds per stage for one photo (its largest face)."""
    t0 = time.perf_counter()
    loaded = read_image(path, max_side=MAX_DECODE_SIDE)
    load = time.perf_counter() - t0
    face = rec.reconstruct(loaded, refine=refine, max_faces=1)[0]
    s = face.seconds
    t0 = time.perf_counter()
    result = face_result(face, rec.model, rec.renderer, loaded.pixels, rec.model_name)
    write_image_results([result], out / path.stem)
    export = time.perf_counter() - t0
    return {"load": load, "detect": detector.last_seconds,
            "align": max(s.get("detect_align", 0.0) - detector.last_seconds, 0.0),
            "regress": s.get("regress", 0.0), "refine": sum(s.get(k, 0.0) for k in REFINE_STAGES),
            "export": export}


def main() -> None:
    shared = Path(os.environ.get("FACENET3D_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=shared / "data/faces/utkface")
    p.add_argument("--n", type=int, default=20, help="photos, evenly spaced over the sorted folder")
    p.add_argument("--refine", default="fast", choices=("none", "landmarks", "fast", "full"))
    p.add_argument("--weights", default="default", help="regressor weights (default, a path, or none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    detector = TimedDetector()
    rec = FaceReconstructor.from_pretrained(a.weights, detector=detector)
    if a.refine == "none" and rec.regressor is None:
        raise SystemExit("--refine none needs regressor weights; none are installed")
    photos = evenly_spaced(sorted(q for q in a.photos.iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png")),
                           a.n)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(photos):
            row = time_photo(rec, detector, path, a.refine, Path(tmp))
            if i > 0:  # the first photo pays graph creation and allocator warm-up
                rows.append(row)
    if not rows:
        raise SystemExit("need at least 2 photos")
    total = [sum(r.values()) for r in rows]
    print(f"{len(rows)} photos from {a.photos} (after 1 warm-up), refine={a.refine}, "
          f"regressor={'yes' if rec.regressor is not None else 'not installed'}, {a.threads} threads")
    print("stage      median ms    mean ms   share")
    report = {"stages": {}, "photos": len(rows), "refine": a.refine, "threads": a.threads,
              "regressor": rec.regressor is not None}
    for stage in STAGES:
        v = [r[stage] for r in rows]
        share = sum(v) / sum(total)
        report["stages"][stage] = {"median_ms": statistics.median(v) * 1e3, "mean_ms": statistics.mean(v) * 1e3}
        print(f"{stage:9s} {statistics.median(v) * 1e3:10.1f} {statistics.mean(v) * 1e3:10.1f} {share:7.1%}")
    fps = len(rows) / sum(total)
    report["faces_per_second"] = fps
    report["seconds_per_face"] = {"median": float(np.median(total)), "mean": float(np.mean(total))}
    print(f"total     {np.median(total) * 1e3:10.1f} {np.mean(total) * 1e3:10.1f}")
    print(f"faces/s   {fps:.3f}")
    if a.json:
        write_report(report, a.json)


if __name__ == "__main__":
    main()
