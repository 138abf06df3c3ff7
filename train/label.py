"""``python -m facenet3d.train.label --photos DIR... --out CACHE``: label every training photo once.

For each photo of each photo folder: the 3DDFA_V2 teacher's 68 3D landmarks and pose, MediaPipe's
478 points, and (AFLW crops only) AFLW's human 21 points, each with a per-photo confidence.
The training data module reads them with :class:`LabelCache`; nothing here runs in the loop.

Layout: ``CACHE/<folder name>/chunk-00000.npz, chunk-00001.npz, ...``, one folder per photo
folder; chunk ``k`` holds photos ``k * chunk .. (k + 1) * chunk - 1`` of the folder's sorted
photo list, keyed by their path relative to the folder. A chunk is written to a temporary file
and renamed when complete, so an interrupted run keeps every finished chunk and a rerun skips
them (the photo list must not change between runs: label a changed folder into a new CACHE).

Arrays of a chunk (``n`` photos):

=============================  =================  =========================================================
``names``                      (n,) str           path relative to the photo folder
``error``                      (n,) str           why the photo could not be read ("" when it was)
``teacher_landmarks68``        (n, 68, 3) f32     teacher's points: photo px (centres at +0.5), z in px
                                                  (larger toward the camera); NaN when unreadable
``teacher_pose``               (n, 3) f32         pitch, yaw, roll degrees (3DDFA_V2's ``calc_pose``)
``teacher_params``             (n, 62) f32        de-normalised 3DDFA parameters (last pass's crop)
``teacher_roi``                (n, 4) f32         the last pass's roi box (3DDFA's array-index frame)
``teacher_confidence``         (n,) f32           ``clip(1 - pass_change / 0.05, 0, 1)``: 1 when the two
                                                  passes agree, 0 when they differ by 5 % of the roi side
``mediapipe478``               (n, 478, 3) f32    MediaPipe's points (photo px; z px, positive away from
                                                  the camera); NaN when no face was found
``mediapipe_confidence``       (n,) f32           the face detector's score (0 for a mesh-only face or none)
``mediapipe_found``            (n,) bool          MediaPipe found a face
``aflw21``                     (n, 21, 2) f32     AFLW's human points (crop px exactly as ``aflw21.npz``
                                                  stores them), NaN where invisible; all NaN elsewhere
``aflw21_confidence``          (n,) f32           fraction of the 21 points marked visible (0 without labels)
=============================  =================  =========================================================

The teacher's first crop: the photos are pre-cropped chips (UTKFace 200², AFLW 120², LFW ~350²)
of very different framings, so the first roi is 3DDFA_V2's roi from landmarks
(:func:`~facenet3d.teacher.roi_box_from_landmarks`) of MediaPipe's iBUG-68 points when MediaPipe
finds the face (the same framing the teacher's second pass uses), else the whole image (every
photo is a face chip); the second pass re-crops around the teacher's own points.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Default photos per chunk.
CHUNK = 256
#: A pass change of this fraction of the roi side gives teacher confidence 0.
TEACHER_CHANGE_SCALE = 0.05
#: AFLW's label file relative to the shared data folder.
AFLW_LABELS = Path("aflw-labels") / "aflw21.npz"
CHUNK_PATTERN = "chunk-*.npz"


class LabelCache:
    """Read the labels of one photo folder: ``cache[relative_path]`` -> dict of per-photo arrays.

    Args:
        root: ``CACHE/<folder name>`` (the chunks of one photo folder).

    Example:
        >>> labels = LabelCache("/work/cache/labels/aflw-crops")   # doctest: +SKIP
        >>> labels["image04379.jpg"]["teacher_landmarks68"].shape  # doctest: +SKIP
        (68, 3)
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._chunks = sorted(self.root.glob(CHUNK_PATTERN))
        self._index: dict[str, tuple[int, int]] = {}
        self._loaded: dict[int, dict[str, np.ndarray]] = {}
        for k, path in enumerate(self._chunks):
            with np.load(path) as f:
                for row, name in enumerate(f["names"]):
                    self._index[str(name)] = (k, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, relative_path: str) -> bool:
        return str(relative_path) in self._index

    def keys(self) -> list[str]:
        """Relative paths of every labelled photo (readable or not: see ``error``)."""
        return list(self._index)

    def __getitem__(self, relative_path: str) -> dict[str, np.ndarray]:
        """Every array of the module docstring for one photo (without the leading axis).

        Raises:
            KeyError: the photo is not in the cache.
        """
        k, row = self._index[str(relative_path)]
        if k not in self._loaded:
            with np.load(self._chunks[k]) as f:
                self._loaded[k] = {name: f[name] for name in f.files}
        return {name: a[row] for name, a in self._loaded[k].items()}


def aflw_labels_by_name(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{crop file name: (21, 2) float32 px}`` from ``aflw21.npz`` (NaN = invisible), as stored.

    The file does not say where its pixel centres lie (0 or 0.5): the points are kept as they
    are, and that half-pixel question is the consumer's (it is 0.4 % of a 120 px crop).
    """
    with np.load(path) as f:
        return {str(n): p.astype(np.float32) for n, p in zip(f["names"], f["points"], strict=True)}


def label_chunk(paths: Sequence[Path], root: Path, teacher, detector,
                aflw: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays of one chunk (module docstring) for ``paths`` under ``root``.

    Unreadable photos get their ``error`` and NaN labels; they never stop the chunk.
    """
    from facenet3d.errors import Facenet3DError
    from facenet3d.landmarks.image_io import read_image
    from facenet3d.teacher import roi_box_from_landmarks
    from facenet3d.teacher.tddfa import INDEX_TO_PIXEL

    n = len(paths)
    out = {"names": np.array([p.relative_to(root).as_posix() for p in paths]), "error": np.full(n, "", dtype=object),
           "teacher_landmarks68": np.full((n, 68, 3), np.nan, np.float32),
           "teacher_pose": np.full((n, 3), np.nan, np.float32),
           "teacher_params": np.full((n, 62), np.nan, np.float32),
           "teacher_roi": np.full((n, 4), np.nan, np.float32), "teacher_confidence": np.zeros(n, np.float32),
           "mediapipe478": np.full((n, 478, 3), np.nan, np.float32),
           "mediapipe_confidence": np.zeros(n, np.float32), "mediapipe_found": np.zeros(n, bool),
           "aflw21": np.full((n, 21, 2), np.nan, np.float32), "aflw21_confidence": np.zeros(n, np.float32)}
    images, rois, rows = [], [], []
    for i, path in enumerate(paths):
        try:
            pixels = read_image(path).pixels
        except (Facenet3DError, OSError) as e:
            out["error"][i] = str(e) or type(e).__name__
            continue
        h, w = pixels.shape[:2]
        roi = np.array([0.0, 0.0, w, h])  # no face found: the whole chip
        try:
            face = detector.detect(pixels, source=str(path))[0]
            out["mediapipe478"][i], out["mediapipe_confidence"][i] = face.landmarks478, face.score
            out["mediapipe_found"][i] = True
            roi = roi_box_from_landmarks(face.landmarks68 - INDEX_TO_PIXEL)
        except Facenet3DError:
            pass
        if aflw is not None and path.name in aflw:
            pts = aflw[path.name]
            out["aflw21"][i] = pts
            out["aflw21_confidence"][i] = np.isfinite(pts[:, 0]).mean()
        images.append(pixels)
        rois.append(roi)
        rows.append(i)
    if rows:
        for i, r in zip(rows, teacher.predict_batch(images, np.stack(rois), passes=2), strict=True):
            out["teacher_landmarks68"][i], out["teacher_pose"][i] = r.landmarks68, r.pose
            out["teacher_params"][i], out["teacher_roi"][i] = r.params, r.roi_box
            out["teacher_confidence"][i] = np.clip(1.0 - r.pass_change / TEACHER_CHANGE_SCALE, 0.0, 1.0)
    out["error"] = out["error"].astype(str)
    return out


def label_folder(root: str | os.PathLike, out_dir: str | os.PathLike, teacher, detector,
                 aflw: dict[str, np.ndarray] | None = None, chunk: int = CHUNK, progress: bool = True,
                 limit: int | None = None) -> dict:
    """Label every photo of one folder into ``out_dir/<folder name>``, skipping finished chunks.

    Returns:
        ``{"folder", "photos", "chunks", "chunks_skipped", "errors": [(relative path, error)]}``.
    """
    from tqdm import tqdm

    from facenet3d.atomic import atomic_path
    from facenet3d.landmarks.image_io import collect_photos

    root = Path(root).resolve()
    photos = collect_photos([root])[:limit]
    target = Path(out_dir) / root.name
    target.mkdir(parents=True, exist_ok=True)
    report: dict = {"folder": str(root), "photos": len(photos), "chunks": 0, "chunks_skipped": 0, "errors": []}
    bar = tqdm(total=len(photos), desc=f"label {root.name}", unit="photo", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for k, start in enumerate(range(0, len(photos), chunk)):
        part = photos[start:start + chunk]
        path = target / f"chunk-{k:05d}.npz"
        if path.is_file():
            report["chunks_skipped"] += 1
        else:
            arrays = label_chunk(part, root, teacher, detector, aflw)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
            report["chunks"] += 1
            for n, e in zip(arrays["names"], arrays["error"], strict=True):
                if e:
                    report["errors"].append((str(n), str(e)))
                    tqdm.write(f"skipped {n}: {e}", file=sys.stderr)
        bar.update(len(part))
    bar.close()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facenet3d.train.label", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", nargs="+", required=True, help="photo folders (one label folder each)")
    p.add_argument("--out", required=True, help="label cache folder")
    shared = Path(os.environ.get("FACENET3D_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    p.add_argument("--teacher", default=str(shared / "data" / "teachers" / "3ddfa_v2"), help="3DDFA_V2 teacher folder")
    p.add_argument("--aflw-labels", default=str(shared / "data" / AFLW_LABELS),
                   help="AFLW's aflw21.npz (used for photos whose names it lists)")
    p.add_argument("--chunk", type=int, default=CHUNK, help=f"photos per chunk (default {CHUNK})")
    p.add_argument("--limit", type=int, default=None, help="first N photos of each folder only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    import time

    from facenet3d.errors import Facenet3DError
    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.teacher import Teacher3DDFA

    try:
        teacher = Teacher3DDFA.from_dir(args.teacher)
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    aflw = aflw_labels_by_name(args.aflw_labels) if Path(args.aflw_labels).is_file() else None
    failed = 0
    with FaceDetector(max_faces=1) as detector:
        for folder in args.photos:
            t0 = time.perf_counter()
            r = label_folder(folder, args.out, teacher, detector, aflw, args.chunk, not args.quiet, args.limit)
            failed += len(r["errors"])
            print(f"{r['folder']}: {r['photos']} photos, {r['chunks']} chunks written, {r['chunks_skipped']} "
                  f"skipped, {len(r['errors'])} unreadable, {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
