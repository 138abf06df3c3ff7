"""Photos and folders in batches: ``OUT/<photo stem>/`` per photo, resumable, failures listed.

Photos are detected and aligned one by one; their crops are collected until a batch is full and
go through the graph together; each photo's folder is then written atomically
(:func:`facenet3d.export.bundle.write_image_results`). What every batch command shares (skipping
photos done with the same settings, ``OUT/failures.json``, the output-folder check, SIGINT /
SIGTERM, progress) is :class:`facenet3d.batch.BatchRun`'s, as for ``facenet3d reconstruct``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.batch import FAILURES_FILE, BatchReport, BatchRun
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

__all__ = ["FAILURES_FILE", "BatchReport", "reconstruct_photos"]


@dataclass
class _Pending:
    path: Path
    folder: Path
    faces: list[FaceCrop]
    image_size: tuple[int, int]
    seconds: dict[str, float]


def reconstruct_photos(photos: list[Path], out: str | Path, session, model: RuntimeFaceModel,
                       detector: FaceDetector | None = None, batch_size: int = 32, max_faces: int | None = None,
                       overwrite: bool = False, quiet: bool = False,
                       failures: list[tuple[Path, str]] | None = None) -> BatchReport:
    """Reconstruct every face of every photo into ``out/<photo stem>/`` (the ``facenet3d reconstruct`` layout).

    Args:
        photos: photo files (e.g. from :func:`facenet3d.batch.collect_inputs`).
        out: output folder.
        session: an :class:`infer.session.RegressorSession`.
        model: its face model (:meth:`RuntimeFaceModel.load`).
        detector: face detector (created when None).
        batch_size: crops per graph run.
        max_faces: at most this many faces per photo.
        overwrite: redo photos done with the same graph and settings (default: skip them).
        quiet: no per-photo lines and no progress bar.
        failures: inputs that already failed (missing paths), listed with this run's.

    Returns:
        The :class:`~facenet3d.batch.BatchReport`; ``out/failures.json`` lists the failures (and
        is removed when a run has none).

    Raises:
        facenet3d.batch.OutputFolderError: ``out`` cannot be written (before any work).
    """
    from facenet3d.batch import file_digest
    from facenet3d.export.bundle import write_image_results
    from facenet3d.landmarks.image_io import read_image
    from facenet3d.overlay import MAX_OVERLAY_SIDE

    detector = detector or FaceDetector()
    settings = {"backend": "onnx", "graph_sha256": file_digest(Path(session.path)), "face_model": model.name,
                "max_faces": max_faces}
    pending: list[_Pending] = []
    with BatchRun(out, settings, overwrite=overwrite, quiet=quiet, failures=failures or ()) as batch:

        def flush() -> None:
            if not pending:
                return
            crops = np.stack([f.crop for item in pending for f in item.faces])
            t0 = time.perf_counter()
            batch.stage("regress")
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
                    batch.stage("write")
                    # The overlay is drawn at a bounded size: decode no more than that.
                    photo = read_image(item.path, max_side=MAX_OVERLAY_SIDE)
                    write_image_results([face_result(f, model, photo) for f in placed], item.folder,
                                        batch.records(item.path))
                except (Facenet3DError, OSError) as e:
                    batch.failed(item.path, str(e))
                    continue
                batch.finished(item.path, item.folder, n)
            pending.clear()

        for path, folder in batch.todo(photos):
            t0 = time.perf_counter()
            try:
                batch.stage("detect")
                image = read_image(path, max_side=MAX_DECODE_SIDE)
                faces = detect_faces(detector, image, session.crop_size, max_faces, source=str(path))
            except (Facenet3DError, OSError) as e:
                batch.failed(path, str(e))
                continue
            hw = (image.original_size[1], image.original_size[0])
            pending.append(_Pending(path, folder, faces, hw, {"detect_align": time.perf_counter() - t0}))
            if sum(len(p.faces) for p in pending) >= batch_size:
                flush()
        flush()
    return batch.report
