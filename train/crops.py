"""``python -m facenet3d.train.crops``: the labelled crop cache of the regressor's training, made once.

Every photo of the shared photo folders is cropped with the product's own alignment
(:mod:`facenet3d.landmarks.align`) and stored with its labels (:mod:`facenet3d.train.label`'s cache) moved
into the crop, in the layout of :class:`~facenet3d.landmarks.cache.PhotoCache` (so the training
data module reads it as it reads a ``facenet3d preprocess`` cache) with these arrays per item
(``S`` = crop side):

=================  ==================  =========================================================
``crop``           (S, S, 3) uint8     the aligned crop
``landmarks478``   (478, 3) float32    MediaPipe's points, crop px (z scaled like x, y); NaN when
                                       MediaPipe found no face
``landmarks68``    (68, 2) float32     MediaPipe's iBUG-68 points, crop px (NaN likewise)
``face_mask``      (S, S) bool         face oval (MediaPipe's, else the hull of the teacher's 68)
``skin_mask``      (S, S) bool         face minus eyes, brows, nostrils, mouth interior
``forward``        (2, 3) float64      photo px -> crop px; ``inverse`` the other way
``teacher68``      (68, 3) float32     the 3DDFA_V2 teacher's 68 points (AFLW2000-3D convention),
                                       crop px; z crop px, larger toward the camera
``aflw21``         (21, 2) float32     AFLW's human points, crop px, NaN where invisible (all NaN
                                       for photos without them)
``label_info``     (8,) float32        :data:`LABEL_INFO` values
=================  ==================  =========================================================

**The crop** is the one the product makes at inference: from MediaPipe's iBUG-68 points
(:func:`~facenet3d.landmarks.align.alignment_matrix`) when MediaPipe found the face with a
detector score of at least ``min_score``, else (profiles MediaPipe misses) from the box of the
teacher's 68 points (:func:`~facenet3d.landmarks.align.box_alignment_matrix`, what the product
does with a face known only by its box).

AFLW's points are stored as ``aflw21.npz`` has them: their half-pixel origin is unknown
(0.4 % of a 120 px crop, see :func:`facenet3d.train.label.aflw_labels_by_name`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from facenet3d.landmarks.align import (
    alignment_matrix,
    box_alignment_matrix,
    crop_image,
    transform_points,
)
from facenet3d.landmarks.cache import _CacheWriter, array_specs
from facenet3d.landmarks.ibug68 import ibug68_from_mediapipe
from facenet3d.landmarks.masks import face_and_skin_masks, fill_polygons

#: Names of the ``label_info`` values, in order.
LABEL_INFO = ("teacher_confidence", "mediapipe_score", "mediapipe_found", "aflw21_visible",
              "pitch_deg", "yaw_deg", "roll_deg", "aligned_by_mediapipe")
#: Default crop side of the cache, px (the training crop is resampled from it).
DEFAULT_SIZE = 160
#: MediaPipe's detector score below which the crop comes from the teacher's points.
DEFAULT_MIN_SCORE = 0.5
#: iBUG-68 index sets that are not skin (eyes, inner mouth), for masks from the teacher's points.
_IBUG_HOLES = (tuple(range(36, 42)), tuple(range(42, 48)), tuple(range(60, 68)))


def label_specs(size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-item shape and dtype of every array of the labelled crop cache (module docstring)."""
    return {**array_specs(size), "teacher68": ((68, 3), np.dtype(np.float32)),
            "aflw21": ((21, 2), np.dtype(np.float32)), "label_info": ((len(LABEL_INFO),), np.dtype(np.float32))}


def crop_matrix(labels: dict[str, np.ndarray], size: int, min_score: float = DEFAULT_MIN_SCORE
                ) -> tuple[np.ndarray, bool]:
    """``((2, 3) photo px -> crop px, aligned by MediaPipe)`` for one photo's labels (module docstring)."""
    if bool(labels["mediapipe_found"]) and float(labels["mediapipe_confidence"]) >= min_score:
        return alignment_matrix(ibug68_from_mediapipe(labels["mediapipe478"][:, :2]), size), True
    pts = np.asarray(labels["teacher_landmarks68"][:, :2], np.float64)
    return box_alignment_matrix(np.concatenate([pts.min(0), pts.max(0)]), size), False


def teacher_masks(points68: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(S, S)`` bool face and skin masks from iBUG-68 points (crop px): their hull minus eyes and mouth."""
    import cv2

    hull = cv2.convexHull(np.ascontiguousarray(points68[:, :2], np.float32))[:, 0]
    face = fill_polygons((size, size), [hull])
    holes = fill_polygons((size, size), [points68[list(idx), :2] for idx in _IBUG_HOLES])
    return face, face & ~holes


def crop_arrays(pixels: np.ndarray, labels: dict[str, np.ndarray], size: int,
                min_score: float = DEFAULT_MIN_SCORE) -> dict[str, np.ndarray]:
    """The arrays of one item (module docstring) from a photo ``(H, W, 3) uint8`` and its label-cache row."""
    forward, by_mediapipe = crop_matrix(labels, size, min_score)
    aligned = crop_image(pixels, forward, size)
    scale = float(np.sqrt(abs(np.linalg.det(forward[:, :2]))))
    teacher = np.asarray(labels["teacher_landmarks68"], np.float32)
    teacher68 = np.concatenate([transform_points(teacher[:, :2], forward), teacher[:, 2:] * scale], 1)
    found = bool(labels["mediapipe_found"])
    mp = np.asarray(labels["mediapipe478"], np.float32)
    if found:
        lm478 = np.concatenate([transform_points(mp[:, :2], forward), mp[:, 2:] * scale], 1)
        lm68 = ibug68_from_mediapipe(lm478[:, :2])
        face_m, skin_m = face_and_skin_masks(lm478, (size, size))
    else:
        lm478 = np.full((478, 3), np.nan, np.float32)
        lm68 = np.full((68, 2), np.nan, np.float32)
        face_m, skin_m = teacher_masks(teacher68, size)
    pose = np.asarray(labels["teacher_pose"], np.float32)
    info = np.array([labels["teacher_confidence"], labels["mediapipe_confidence"], float(found),
                     labels["aflw21_confidence"], *pose, float(by_mediapipe)], np.float32)
    return {"crop": aligned.crop, "landmarks478": lm478.astype(np.float32), "landmarks68": lm68.astype(np.float32),
            "face_mask": face_m, "skin_mask": skin_m, "forward": aligned.forward, "inverse": aligned.inverse,
            "teacher68": teacher68.astype(np.float32),
            "aflw21": transform_points(labels["aflw21"], forward).astype(np.float32), "label_info": info}


def build_crop_cache(photo_dirs: list[str | os.PathLike], label_root: str | os.PathLike, out: str | os.PathLike,
                     size: int = DEFAULT_SIZE, min_score: float = DEFAULT_MIN_SCORE, shard_size: int = 512,
                     progress: bool = True, limit: int | None = None) -> dict:
    """Crop and label every labelled photo of ``photo_dirs`` into the cache ``out``; skips photos done.

    Photos whose labels are not (yet) in ``label_root/<folder name>`` are left for a later run;
    unreadable ones (the label cache's ``error``) and ones without teacher points are recorded
    as failures. ``limit``: only the first photos of each folder (tests, smoke runs).

    Returns:
        ``{"added", "failed", "waiting", "items"}`` counts.
    """
    from facenet3d.train.label import LabelCache
    from tqdm import tqdm

    from facenet3d.landmarks.image_io import read_image

    writer = _CacheWriter(Path(out), size, shard_size, specs=label_specs(size))
    done = writer.done | {f["source"] for f in writer.manifest["failures"]}
    report = {"added": 0, "failed": 0, "waiting": 0}
    for folder in photo_dirs:
        root = Path(folder).resolve()
        labels = LabelCache(Path(label_root) / root.name)
        photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
        for path in tqdm(photos, desc=f"crop {root.name}", disable=not progress, file=sys.stderr):
            source = str(path)
            rel = path.relative_to(root).as_posix()
            if source in done:
                continue
            if rel not in labels:
                report["waiting"] += 1
                continue
            row = labels[rel]
            if str(row["error"]) or not np.isfinite(row["teacher_landmarks68"]).all():
                writer.fail(source, str(row["error"]) or "no teacher landmarks")
                report["failed"] += 1
                continue
            pixels = read_image(path).pixels
            writer.add(source, {"width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
                                "faces": int(row["mediapipe_found"])}, crop_arrays(pixels, row, size, min_score))
            report["added"] += 1
    writer.flush()
    report["items"] = len(writer.manifest["items"])
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facenet3d.train.crops", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", nargs="+", required=True, help="photo folders (labelled into --labels)")
    p.add_argument("--labels", required=True, help="label cache folder of `python -m facenet3d.train.label`")
    p.add_argument("--out", required=True, help="crop cache folder (re-runs add the photos not yet cached)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"crop side, px (default {DEFAULT_SIZE})")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help="MediaPipe detector score from which its points align the crop")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    r = build_crop_cache(args.photos, args.labels, args.out, args.size, args.min_score, progress=not args.quiet)
    print(f"{args.out}: {r['added']} added, {r['failed']} failed, {r['waiting']} waiting for labels, "
          f"{r['items']} items", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
