"""facenet3d's native face-model format: one ``.npz`` with a JSON metadata entry.

Every array of :class:`FaceModelArrays` is stored under its field name (regions as
``region__<name>``); the entry ``metadata`` is a JSON string with ``format``
(``"facenet3d-face-model"``), ``format_version``, ``units`` (``"mm"``), the lists of names,
``albedo_space`` and the model's own metadata (name, provenance, license). Loading never
unpickles (``allow_pickle=False``) and validates shapes and dtypes.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet3d.atomic import atomic_path
from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.arrays import FORMAT_VERSION, FaceModelArrays

if TYPE_CHECKING:  # reading arrays needs no torch (the torch-free runtime reads face models)
    from facenet3d.facemodel.model import MorphableModel

FORMAT_NAME = "facenet3d-face-model"
_LISTS = ("expression_names", "joint_names")
_SKIP = {"regions", "parts", "landmark_embeddings", "metadata", "albedo_space", *_LISTS}
_FLOAT16_OK = {"albedo_basis", "specular_basis", "identity_basis", "expression_basis"}


def save_face_model(model: MorphableModel | FaceModelArrays, path: str | Path,
                    half_bases: bool = False) -> Path:
    """Write a face model in the native format, atomically (temporary file, then rename).

    Args:
        model: the model or its arrays.
        path: destination ``.npz``.
        half_bases: store the large bases as float16 (halves the file; loading casts back
            to float32). Relative error about 1e-3 of each basis value.

    Returns:
        The written path.
    """
    arrays = model if isinstance(model, FaceModelArrays) else model.to_arrays()
    arrays.validate(str(path))
    payload: dict[str, np.ndarray] = {}
    for f in fields(arrays):
        value = getattr(arrays, f.name)
        if f.name in _SKIP or value is None:
            continue
        if half_bases and f.name in _FLOAT16_OK:
            value = value.astype(np.float16)
        elif value.dtype.kind == "f":
            value = value.astype(np.float32)
        payload[f.name] = value
    for name, mask in arrays.regions.items():
        payload[f"region__{name}"] = mask.astype(bool)
    for name, tri in arrays.parts.items():
        payload[f"part__{name}"] = tri.astype(np.int32)
    for name, (index, weights) in arrays.landmark_embeddings.items():
        payload[f"embedding__{name}__index"] = index.astype(np.int32)
        payload[f"embedding__{name}__weights"] = weights.astype(np.float32)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "units": "mm",
        "albedo_space": arrays.albedo_space,
        **{k: list(getattr(arrays, k)) for k in _LISTS},
        "model": arrays.metadata,
    }
    payload["metadata"] = np.array(json.dumps(meta))
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        np.savez_compressed(f, **payload)
    return path


def read_face_model_arrays(path: str | Path) -> FaceModelArrays:
    """Read and validate a native ``.npz`` into :class:`FaceModelArrays`.

    Raises:
        FaceModelFormatError: missing, truncated or foreign file, or inconsistent arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FaceModelFormatError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
        raise FaceModelFormatError(path, f"not a readable facenet3d .npz face model ({e})") from e
    if "metadata" not in data:
        raise FaceModelFormatError(path, "no 'metadata' entry: not a facenet3d face model")
    try:
        meta = json.loads(str(data.pop("metadata")))
    except json.JSONDecodeError as e:
        raise FaceModelFormatError(path, f"metadata is not JSON ({e})") from e
    if meta.get("format") != FORMAT_NAME:
        raise FaceModelFormatError(path, f"format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise FaceModelFormatError(path, f"format version {meta['format_version']} is newer than this "
                                         f"facenet3d reads ({FORMAT_VERSION}); upgrade facenet3d")
    if meta.get("units") != "mm":
        raise FaceModelFormatError(path, f"units are {meta.get('units')!r}, expected 'mm'")
    known = {f.name for f in fields(FaceModelArrays)} - _SKIP
    kwargs: dict = {}
    regions, parts, embeddings = {}, {}, {}
    for key, value in data.items():
        if key.startswith("region__"):
            regions[key[len("region__"):]] = value.astype(bool)
        elif key.startswith("part__"):
            parts[key[len("part__"):]] = value.astype(np.int64)
        elif key.startswith("embedding__") and key.endswith(("__index", "__weights")):
            name, _, what = key[len("embedding__"):].rpartition("__")
            embeddings.setdefault(name, {})[what] = value
        elif key in known:
            kwargs[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
        else:
            raise FaceModelFormatError(path, f"unknown entry {key!r}")
    for required in ("mean_shape", "triangles", "identity_basis", "expression_basis", "landmarks68"):
        if required not in kwargs:
            raise FaceModelFormatError(path, f"missing entry {required!r}")
    for name, entry in embeddings.items():
        if set(entry) != {"index", "weights"}:
            raise FaceModelFormatError(path, f"landmark embedding {name!r} lacks its index or weights")
    arrays = FaceModelArrays(**kwargs, regions=regions, parts=parts,
                             landmark_embeddings={n: (e["index"].astype(np.int64), e["weights"].astype(np.float32))
                                                  for n, e in embeddings.items()},
                             albedo_space=meta.get("albedo_space", "none"),
                             metadata=meta.get("model", {}), **{k: meta.get(k, []) for k in _LISTS})
    arrays.validate(str(path))
    return arrays


def load_native(path: str | Path) -> MorphableModel:
    """Load a native ``.npz`` face model."""
    from facenet3d.facemodel.model import MorphableModel

    return MorphableModel(read_face_model_arrays(path), source=str(path))
