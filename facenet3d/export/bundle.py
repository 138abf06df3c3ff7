"""The output folder of one reconstructed face, written as a whole or not at all.

``OUT/<image stem>/`` (``face_<i>/`` inside it when the photo has several faces) holds::

    mesh.obj, mesh.mtl, albedo.png [, specular.png, roughness.png, normal.png]
    mesh.glb        the same mesh (model frame, mm; glTF stores metres); for a model with named
                    expressions, its modes as morph targets weighted to the reconstruction
    params.json     coefficients (``expression_by_name`` too, for named expressions), lighting,
                    pose (yaw/pitch/roll degrees, translation mm), camera
    landmarks.json  {"image_px": 68 x [x, y], "mesh_mm": 68 x [x, y, z]}
    overlay.png     the textured render | the shaded geometry with its landmarks, over the photo at a
                    bounded size (:mod:`facenet3d.export.overlay`)

A head model's separate parts (eyeballs, teeth, ...) are in every mesh file, with flat materials.

Everything is written into a hidden sibling folder that is renamed into place when complete,
so a crash never leaves a partial result and a batch can resume by skipping folders that
exist. numpy only (no torch), so the torch-free runtime writes the same layout.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facenet3d.export.gltf import write_glb
from facenet3d.export.jsonfile import write_json
from facenet3d.export.mesh import TexturedMesh
from facenet3d.export.obj import write_obj
from facenet3d.export.textures import write_png


@dataclass
class FaceResult:
    """Everything written for one face (numpy arrays, no torch).

    Attributes:
        mesh: the textured mesh in the model frame (mm, pose removed, expression kept).
        params: JSON-able parameter record (see ``params.json``).
        landmarks_image_px: ``(68, 2)`` in original-image pixels.
        landmarks_mesh_mm: ``(68, 3)`` on the mesh, model frame.
        overlay: ``(H, W, 3)`` uint8 render over the photo.
    """

    mesh: TexturedMesh
    params: dict
    landmarks_image_px: np.ndarray
    landmarks_mesh_mm: np.ndarray
    overlay: np.ndarray
    extra_files: dict[str, np.ndarray] = field(default_factory=dict)


def write_face_files(result: FaceResult, folder: Path) -> None:
    """Write one face's files into an existing folder (not atomic by itself)."""
    write_obj(result.mesh, folder / "mesh.obj")
    write_glb(result.mesh, folder / "mesh.glb")
    write_json(result.params, folder / "params.json")
    write_json({"image_px": np.asarray(result.landmarks_image_px, np.float64).round(3),
                "mesh_mm": np.asarray(result.landmarks_mesh_mm, np.float64).round(4)},
               folder / "landmarks.json")
    write_png(result.overlay, folder / "overlay.png")
    for name, image in result.extra_files.items():
        write_png(image, folder / name)


def write_image_results(results: list[FaceResult], folder: str | Path, records: dict[str, dict] | None = None
                        ) -> Path:
    """Write the faces of one photo atomically: their files straight into ``folder`` for one
    face, into ``folder/face_<i>/`` (largest face first) for several. An existing ``folder``
    is replaced only once the new one is complete. ``records`` are JSON files of the photo
    (name -> content) written into ``folder`` with the rest, e.g. a batch's resume record.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}.tmp")
    try:
        tmp.mkdir()
        for i, result in enumerate(results):
            sub = tmp if len(results) == 1 else tmp / f"face_{i}"
            sub.mkdir(exist_ok=True)
            write_face_files(result, sub)
        for name, record in (records or {}).items():
            write_json(record, tmp / name)
        replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def replace_folder(src: Path, dst: Path) -> None:
    """Move the complete folder ``src`` to ``dst``, replacing what was there."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.old")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
