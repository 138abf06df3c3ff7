"""Photos and folders in batches: ``OUT/<photo stem>/`` per photo, resumable, failures listed.

Photos are detected and aligned one by one; their crops are collected until a batch is full and
go through the graph together; each photo's folder is then written atomically
(:func:`facenet3d.export.bundle.write_image_results`), so an interrupted run leaves only complete
folders and the next run skips them. A photo that cannot be read or has no face is reported,
listed in ``OUT/failures.json``, and the others go on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facenet3d.errors import Facenet3DError
from facenet3d.landmarks.detect import FaceDetector
from infer.pipeline import (
    MAX_DECODE_SIDE,
    FaceCrop,
    RuntimeFaceModel,
    crops_to_input,
    detect_faces,
    face_result,
    place_faces,
)

FAILURES_FILE = "failures.json"


@dataclass
class BatchReport:
    """What a run did.

    Attributes:
        written: output folders written by this run.
        skipped: photos whose folder already existed (resumed runs).
        failures: ``(photo, message)`` of photos that failed.
        faces: faces reconstructed.
        seconds: wall-clock time of the run.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    faces: int = 0
    seconds: float = 0.0


def output_names(photos: list[Path]) -> list[str]:
    """Output folder name of each photo: its stem, ``<stem>_2``, ... when stems repeat (the
    naming of ``facenet3d reconstruct``; deterministic for a given input list, so resuming finds
    the same folders)."""
    used: set[str] = set()
    names = []
    for path in photos:
        name, k = path.stem, 1
        while name in used:
            k += 1
            name = f"{path.stem}_{k}"
        used.add(name)
        names.append(name)
    return names


def progress(items: Iterable, total: int, desc: str, disable: bool) -> Iterator:
    """A tqdm progress bar when tqdm is installed, the bare iterable otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for the runtime
        return iter(items)
    return iter(tqdm(items, total=total, desc=desc, unit="photo", disable=disable))


def log(message: str, quiet: bool, err: bool = False) -> None:
    """A line that does not break the progress bar."""
    if quiet and not err:
        return
    try:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr if err else sys.stdout)
    except ImportError:
        print(message, file=sys.stderr if err else sys.stdout)


@dataclass
class _Pending:
    path: Path
    folder: Path
    faces: list[FaceCrop]
    image_size: tuple[int, int]
    seconds: dict[str, float]


def reconstruct_photos(photos: list[Path], out: str | Path, session, model: RuntimeFaceModel,
                       detector: FaceDetector | None = None, batch_size: int = 32, max_faces: int | None = None,
                       overwrite: bool = False, quiet: bool = False) -> BatchReport:
    """Reconstruct every face of every photo into ``out/<photo stem>/`` (the ``facenet3d reconstruct`` layout).

    Args:
        photos: photo files (e.g. from :func:`facenet3d.landmarks.cache.collect_photos`).
        out: output folder.
        session: an :class:`infer.session.RegressorSession`.
        model: its face model (:meth:`RuntimeFaceModel.load`).
        detector: face detector (created when None).
        batch_size: crops per graph run.
        max_faces: at most this many faces per photo.
        overwrite: redo photos whose folder exists (default: skip them).
        quiet: no per-photo lines and no progress bar.

    Returns:
        The :class:`BatchReport`; ``out/failures.json`` lists the failures (and is removed
        when a run has none).
    """
    from facenet3d.export.bundle import write_image_results
    from facenet3d.export.jsonfile import write_json
    from facenet3d.landmarks.image_io import read_image

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    detector = detector or FaceDetector()
    report = BatchReport()
    pending: list[_Pending] = []

    def flush() -> None:
        if not pending:
            return
        crops = np.stack([f.crop for item in pending for f in item.faces])
        t0 = time.perf_counter()
        outputs = session.run(crops_to_input(crops), batch_size=batch_size)
        per_face = (time.perf_counter() - t0) / len(crops)
        row = 0
        for item in pending:
            n = len(item.faces)
            rows = {name: value[row:row + n] for name, value in outputs.items()}
            row += n
            try:
                placed = place_faces(rows, item.faces, model, session.crop_size, item.image_size,
                                     {**item.seconds, "regress": per_face})
                photo = read_image(item.path).pixels
                folder = write_image_results([face_result(f, model, photo) for f in placed], item.folder)
            except (Facenet3DError, OSError) as e:
                report.failures.append((item.path, str(e)))
                log(f"failed: {e}", quiet, err=True)
                continue
            report.written.append(folder)
            report.faces += n
            log(f"{item.path} -> {folder} ({n} face{'s' * (n > 1)})", quiet)
        pending.clear()

    todo = list(zip(photos, output_names(photos), strict=True))
    for path, name in progress(todo, len(todo), "reconstruct", disable=quiet or len(todo) < 2):
        folder = out / name
        if folder.is_dir() and not overwrite:
            report.skipped.append(path)
            continue
        t0 = time.perf_counter()
        try:
            image = read_image(path, max_side=MAX_DECODE_SIDE)
            faces = detect_faces(detector, image, session.crop_size, max_faces, source=str(path))
        except (Facenet3DError, OSError) as e:
            report.failures.append((path, str(e)))
            log(f"failed: {e}", quiet, err=True)
            continue
        hw = (image.original_size[1], image.original_size[0])
        pending.append(_Pending(path, folder, faces, hw, {"detect_align": time.perf_counter() - t0}))
        if sum(len(p.faces) for p in pending) >= batch_size:
            flush()
    flush()

    failures_path = out / FAILURES_FILE
    if report.failures:
        write_json([{"input": str(p), "error": msg} for p, msg in report.failures], failures_path)
    elif failures_path.exists():
        failures_path.unlink()
    report.seconds = time.perf_counter() - t_start
    return report
