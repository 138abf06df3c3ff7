"""The Parquet outputs of a photo run: a face table for data sets, and the failures table.

``--table`` writes, instead of a folder per photo, one Parquet dataset ``OUT/faces.parquet/``
(a folder of part files, read whole by ``pyarrow.dataset``, pandas, Ray, Spark...) with one row
per face: the numbers of ``params.json`` and ``landmarks.json``, unrounded:

============================  ====================================================================
column                        content
============================  ====================================================================
``input``                     the photo's path
``name``                      its output name (the stem, ``<stem>_2`` when stems repeat)
``face``                      the face's index in the photo, largest first
``input_sha256``              the photo file's SHA-256 (with ``settings``: what resuming compares)
``settings``                  the run's settings, JSON (graph digest, face model, ``max_faces``)
``identity`` ... ``sh``       the coefficients (``sh`` is ``(9, 3)`` row-major), crop camera
``specular_scale``            as in ``params.json``; ``roughness`` likewise
``crop_rotation_6d``          the crop camera's pose (``params.json``'s ``crop``); ``crop_translation_mm``
``rotation_matrix``           ``(3, 3)`` row-major model -> photo camera; ``translation_mm`` (3,)
``rotation_ypr_deg``          yaw, pitch, roll in degrees
``focal_px``                  the photo camera; ``principal_px``, ``image_size_hw``
``crop_forward``              ``(2, 3)`` row-major photo px -> crop px
``detection_box``             ``x0, y0, x1, y1`` photo px; ``detection_score``
``landmarks68_image_px``      ``(68, 2)`` row-major, photo px
``landmarks68_mesh_mm``       ``(68, 3)`` row-major, model frame
============================  ====================================================================

Part files are written under a temporary name and renamed, and are named by a digest of their
photos, so a batch that is retried (its worker died) replaces its own part instead of adding
rows twice. ``OUT/failures.parquet`` (``input``, ``error``) lists the failed inputs, as
``failures.json`` does. pyarrow is imported here only, when a table is written or read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet3d.camera_math import matrix_to_euler
from facenet3d.errors import MissingExtraError

if TYPE_CHECKING:
    from facenet3d.infer.pipeline import PhotoFace

#: The face table's folder in the output folder.
FACE_TABLE = "faces.parquet"
#: The failures table in the output folder.
FAILURES_TABLE = "failures.parquet"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("a Parquet table", "pyarrow", "ray") from None
    return pa, pq


def settings_json(settings: dict) -> str:
    """``settings`` as the table stores them (sorted keys: equal settings give equal strings)."""
    return json.dumps(settings, sort_keys=True)


def face_rows(faces: list[PhotoFace], name: str, record: dict) -> list[dict]:
    """The table rows of one photo's faces.

    Args:
        faces: the photo's placed faces (:func:`facenet3d.infer.batch.place_photo`).
        name: its output name.
        record: its resume record (:func:`facenet3d.batch.result_record`).
    """
    rows = []
    for i, f in enumerate(faces):
        p = f.params

        def flat(a, dtype=np.float32) -> np.ndarray:
            return np.asarray(a, dtype).reshape(-1)

        rows.append({
            "input": record["input"]["path"], "name": name, "face": i, "input_sha256": record["input"]["sha256"],
            "settings": settings_json(record["settings"]),
            "identity": flat(p["identity"]), "expression": flat(p["expression"]), "albedo": flat(p["albedo"]),
            "sh": flat(p["sh"]), "specular_scale": float(flat(p["specular"])[0]),
            "roughness": float(flat(p["roughness"])[0]),
            "crop_rotation_6d": flat(p["rotation"]), "crop_translation_mm": flat(p["translation"]),
            "rotation_matrix": flat(f.rotation, np.float64), "translation_mm": flat(f.translation, np.float64),
            "rotation_ypr_deg": flat(matrix_to_euler(f.rotation), np.float64),
            "focal_px": flat(f.camera.focal, np.float64), "principal_px": flat(f.camera.principal, np.float64),
            "image_size_hw": flat(f.camera.image_size, np.int32),
            "crop_forward": flat(f.face.forward, np.float64),
            "detection_box": flat(f.face.detected.box), "detection_score": float(f.face.detected.score),
            "landmarks68_image_px": flat(f.landmarks68_image, np.float64),
            "landmarks68_mesh_mm": flat(f.landmarks68_mesh, np.float64),
        })
    return rows


def write_table_part(rows: list[dict], folder: str | Path) -> Path | None:
    """Write ``rows`` as one part file of the table in ``folder`` (atomically); None when empty.

    The part's name is a digest of its photos (path and content), so writing the same photos
    again replaces the part.
    """
    from facenet3d.atomic import atomic_path

    if not rows:
        return None
    pa, pq = _pyarrow()
    key = hashlib.sha256()
    for r in rows:
        key.update(f"{r['input']}\0{r['input_sha256']}\0{r['face']}\n".encode())
    path = Path(folder) / f"part-{key.hexdigest()[:32]}.parquet"
    table = pa.table({name: [r[name] for r in rows] for name in rows[0]})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(folder: str | Path):
    """The face table in ``folder`` as a ``pyarrow.Table`` (rows in no particular order)."""
    pa, pq = _pyarrow()
    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no table parts")
    return pa.concat_tables([pq.read_table(p) for p in parts])


def finished_inputs(folder: str | Path, settings: dict) -> dict[str, str]:
    """``{input path: SHA-256}`` of the photos the table in ``folder`` holds under ``settings``
    (the photos a resumed run skips)."""
    _, pq = _pyarrow()
    wanted = settings_json(settings)
    done: dict[str, str] = {}
    for part in sorted(Path(folder).glob("part-*.parquet")):
        t = pq.read_table(part, columns=["input", "input_sha256", "settings"]).to_pydict()
        for path, digest, s in zip(t["input"], t["input_sha256"], t["settings"], strict=True):
            if s == wanted:
                done[path] = digest
    return done


def write_failures_table(out: str | Path, failures: list[tuple[Path, str]]) -> Path | None:
    """``out/failures.parquet`` (``input``, ``error``) of ``failures``, or remove it when there are none."""
    from facenet3d.atomic import atomic_path

    path = Path(out) / FAILURES_TABLE
    if not failures:
        path.unlink(missing_ok=True)
        return None
    pa, pq = _pyarrow()
    table = pa.table({"input": [str(p) for p, _ in failures], "error": [m for _, m in failures]})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
