"""Photos and folders in batches: ``OUT/<photo stem>/`` per photo, resumable, failures listed.

Photos are detected and aligned one by one; their crops are collected until a batch is full and
go through the graph together; each photo's folder is then written atomically
(:func:`facenet3d.export.bundle.write_image_results`). What every batch command shares (skipping
photos done with the same settings, ``OUT/failures.json``, the output-folder check, SIGINT /
SIGTERM, progress) is :class:`facenet3d.batch.BatchRun`'s, as for ``facenet3d reconstruct``.

The stages (:func:`detect_photo`, :func:`regress_photos`, :func:`place_photo`,
:func:`write_photo_folder`) are the whole per-photo work: :func:`reconstruct_photos` chains them
in one process, :mod:`facenet3d.infer.ray_engine` runs the same functions as Ray tasks and actors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from facenet3d.infer.pipeline import (
    MAX_DECODE_SIDE,
    FaceCrop,
    PhotoFace,
    RuntimeFaceModel,
    crops_to_input,
    detect_faces,
    face_result,
    place_faces,
)

from facenet3d.batch import FAILURES_FILE, BatchReport, BatchRun
from facenet3d.errors import Facenet3DError
from facenet3d.landmarks.detect import FaceDetector

__all__ = ["FAILURES_FILE", "BatchReport", "DetectedPhoto", "detect_photo", "photo_settings", "place_photo",
           "reconstruct_photos", "regress_photos", "write_photo_folder"]


@dataclass
class DetectedPhoto:
    """A photo between detection and regression.

    Attributes:
        path: the photo file.
        folder: its output folder.
        faces: its faces, largest first, with their aligned crops.
        image_size: ``(H, W)`` of the original upright photo.
        seconds: time per stage so far (recorded in ``params.json``).
    """

    path: Path
    folder: Path
    faces: list[FaceCrop]
    image_size: tuple[int, int]
    seconds: dict[str, float] = field(default_factory=dict)


def photo_settings(graph_sha256: str, model: RuntimeFaceModel, max_faces: int | None) -> dict:
    """What makes two runtime results the same (the resume record's ``settings``), whichever
    engine runs them, so that one engine resumes the other's output folder."""
    return {"backend": "onnx", "graph_sha256": graph_sha256, "face_model": model.name, "max_faces": max_faces}


def detect_photo(path: Path, folder: Path, detector: FaceDetector, crop_size: int,
                 max_faces: int | None = None) -> DetectedPhoto:
    """Decode ``path`` (bounded) and detect and align its faces.

    Raises:
        Facenet3DError: unreadable photo, no face.
        OSError: the file cannot be read.
    """
    from facenet3d.landmarks.image_io import read_image

    t0 = time.perf_counter()
    image = read_image(path, max_side=MAX_DECODE_SIDE)
    faces = detect_faces(detector, image, crop_size, max_faces, source=str(path))
    hw = (image.original_size[1], image.original_size[0])
    return DetectedPhoto(Path(path), Path(folder), faces, hw, {"detect_align": time.perf_counter() - t0})


def regress_photos(session, photos: list[DetectedPhoto], batch_size: int | None = None
                   ) -> list[dict[str, np.ndarray]]:
    """Run the graph on every face of ``photos`` at once (``batch_size`` crops per run); returns
    each photo's outputs (rows in face order) and records the time per face as its ``regress``
    seconds."""
    if not photos:
        return []
    crops = np.stack([f.crop for photo in photos for f in photo.faces])
    t0 = time.perf_counter()
    outputs = session.run(crops_to_input(crops), batch_size=batch_size)
    per_face = (time.perf_counter() - t0) / len(crops)
    rows, start = [], 0
    for photo in photos:
        n = len(photo.faces)
        rows.append({name: value[start:start + n] for name, value in outputs.items()})
        photo.seconds["regress"] = per_face
        start += n
    return rows


def place_photo(outputs: dict[str, np.ndarray], photo: DetectedPhoto, model: RuntimeFaceModel,
                crop_size: int) -> list[PhotoFace]:
    """The faces of one photo placed in it (:func:`facenet3d.infer.pipeline.place_faces`)."""
    return place_faces(outputs, photo.faces, model, crop_size, photo.image_size, photo.seconds)


def write_photo_folder(faces: list[PhotoFace], photo: DetectedPhoto, model: RuntimeFaceModel,
                       records: dict[str, dict]) -> None:
    """Write one photo's folder atomically, with ``records`` (its resume record) inside.

    Raises:
        Facenet3DError, OSError: the photo cannot be decoded again or the files cannot be written.
    """
    from facenet3d.export.bundle import write_image_results
    from facenet3d.export.overlay import MAX_OVERLAY_SIDE
    from facenet3d.landmarks.image_io import read_image

    # The overlay is drawn at a bounded size: decode no more than that.
    pixels = read_image(photo.path, max_side=MAX_OVERLAY_SIDE)
    write_image_results([face_result(f, model, pixels) for f in faces], photo.folder, records)


def reconstruct_photos(photos: list[Path], out: str | Path, session, model: RuntimeFaceModel,
                       detector: FaceDetector | None = None, batch_size: int = 32, max_faces: int | None = None,
                       overwrite: bool = False, quiet: bool = False,
                       failures: list[tuple[Path, str]] | None = None) -> BatchReport:
    """Reconstruct every face of every photo into ``out/<photo stem>/`` (the ``facenet3d reconstruct`` layout).

    Args:
        photos: photo files (e.g. from :func:`facenet3d.batch.collect_inputs`).
        out: output folder.
        session: an :class:`facenet3d.infer.session.RegressorSession`.
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

    detector = detector or FaceDetector()
    settings = photo_settings(file_digest(Path(session.path)), model, max_faces)
    pending: list[DetectedPhoto] = []
    with BatchRun(out, settings, overwrite=overwrite, quiet=quiet, failures=failures or ()) as batch:

        def flush() -> None:
            if not pending:
                return
            batch.stage("regress")
            for photo, outputs in zip(pending, regress_photos(session, pending, batch_size), strict=True):
                try:
                    faces = place_photo(outputs, photo, model, session.crop_size)
                    batch.stage("write")
                    write_photo_folder(faces, photo, model, batch.records(photo.path))
                except (Facenet3DError, OSError) as e:
                    batch.failed(photo.path, str(e))
                    continue
                batch.finished(photo.path, photo.folder, len(faces))
            pending.clear()

        for path, folder in batch.todo(photos):
            try:
                batch.stage("detect")
                pending.append(detect_photo(path, folder, detector, session.crop_size, max_faces))
            except (Facenet3DError, OSError) as e:
                batch.failed(path, str(e))
                continue
            if sum(len(p.faces) for p in pending) >= batch_size:
                flush()
        flush()
    return batch.report
