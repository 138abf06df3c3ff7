"""Regressor weights as safetensors, with what they belong to written in the header.

A file holds the regressor's ``state_dict`` (float32 tensors; no pickle, so loading a file
from anywhere runs no code) and one metadata entry, ``"facenet3d"``, a JSON string::

    {"format": "facenet3d-regressor", "format_version": 1,
     "regressor": {"variant": "resnet18", "backbone": "resnet18", "crop_size": 160,
                   "identity_dim": 30, "expression_dim": 20, "albedo_dim": 40,
                   "mean": [...], "std": [...], "face_model": "facenet3d_face_v1",
                   "face_model_fingerprint": "<sha256>"},
     "tensors_sha256": "<sha256 of every tensor, see below>",
     "extra": {...training provenance...}}

Loading checks the format, that the tensors are exactly those of the recorded architecture,
their checksum (safetensors itself detects a truncated file but not flipped bytes), and, when
a face model is given, that it is the one the head was built for; every failure raises
:class:`~facenet3d.errors.WeightsError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from facenet3d.atomic import write_bytes
from facenet3d.errors import WeightsError
from facenet3d.facemodel import MorphableModel
from facenet3d.facemodel.registry import WEIGHTS_DIR
from facenet3d.network.regressor import FaceRegressor, RegressorInfo, _check_dims

FORMAT_NAME = "facenet3d-regressor"
FORMAT_VERSION = 1
METADATA_KEY = "facenet3d"

#: Shipped regressors: name -> file in ``weights/`` (model card: ``weights/README.md``).
#: ``"default"`` is the ``resnet18`` variant (the best accuracy CPU training gave), ``"fast"`` the
#: ``mobilenetv3`` variant (the least inference time per face).
PRETRAINED: dict[str, str] = {
    "default": "facenet3d_regressor_resnet18_v3.safetensors",
    "fast": "facenet3d_regressor_mobilenetv3_v2.safetensors",
}

def face_model_fingerprint(model: MorphableModel) -> str:
    """sha256 (hex) of a face model's geometry, landmark and albedo arrays
    (:meth:`~facenet3d.facemodel.FaceModelArrays.fingerprint`).

    Two models with the same fingerprint decode every coefficient vector identically; loading
    a model through a float16 file (``save_face_model(..., half_bases=True)``) is
    deterministic, so the same file always gives the same fingerprint.
    """
    return model.to_arrays().fingerprint()


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) over names, dtypes, shapes and bytes of ``tensors`` in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def pretrained_path(name: str) -> Path:
    """Path of the shipped regressor ``name`` (see :data:`PRETRAINED`)."""
    if name not in PRETRAINED:
        raise WeightsError(f"no shipped regressor named {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    return WEIGHTS_DIR / PRETRAINED[name]


def save_regressor(regressor: FaceRegressor, path: str | Path, extra: dict | None = None) -> Path:
    """Write a regressor's weights and metadata as safetensors, atomically.

    Args:
        regressor: the model.
        path: destination (``.safetensors``).
        extra: JSON-serialisable provenance (training config, steps, data) stored in the header.

    Returns:
        The written path.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in regressor.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "regressor": regressor.info.to_dict(),
            "tensors_sha256": tensors_checksum(tensors), "extra": extra or {}}
    return write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(meta)}), path)


def _resolve(path_or_name: str | Path) -> Path:
    p = Path(path_or_name).expanduser()
    if isinstance(path_or_name, str) and path_or_name in PRETRAINED and not p.exists():
        p = pretrained_path(path_or_name)
    if not p.is_file():
        hint = (" (shipped regressors are not installed yet)" if str(path_or_name) in PRETRAINED else "")
        raise WeightsError(f"{p}: no such weights file{hint}")
    return p


def read_regressor_metadata(path_or_name: str | Path) -> dict:
    """The ``"facenet3d"`` header entry of a weights file (see the module docstring)."""
    return _read(_resolve(path_or_name), tensors=False)[0]


def _read(path: Path, tensors: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # safetensors raises its own error type for truncated or foreign files
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    if METADATA_KEY not in header:
        raise WeightsError(f"{path}: safetensors file without facenet3d metadata (not a facenet3d regressor)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except ValueError as e:
        raise WeightsError(f"{path}: corrupt facenet3d metadata ({e})") from e
    if meta.get("format") != FORMAT_NAME:
        raise WeightsError(f"{path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path}: format version {meta.get('format_version')} is newer than this "
                           f"facenet3d reads ({FORMAT_VERSION}); upgrade facenet3d")
    return meta, out


def check_face_model(info: RegressorInfo, model: MorphableModel, source: str | Path | None = None) -> None:
    """Raise :class:`WeightsError` unless ``model`` is the face model the regressor was built for."""
    _check_dims(info, model, None if source is None else str(source))
    fingerprint = face_model_fingerprint(model)
    if info.face_model_fingerprint and fingerprint != info.face_model_fingerprint:
        name = model.metadata.get("name", "unnamed")
        where = f"{source}: " if source else ""
        raise WeightsError(f"{where}the regressor was trained for face model {info.face_model!r} "
                           f"(fingerprint {info.face_model_fingerprint[:12]}), not for {name!r} "
                           f"(fingerprint {fingerprint[:12]})")


def load_regressor(path_or_name: str | Path = "default", face_model: MorphableModel | None = None,
                   device: torch.device | str = "cpu") -> FaceRegressor:
    """Load a regressor saved by :func:`save_regressor`.

    Args:
        path_or_name: a ``.safetensors`` path or a shipped name (:data:`PRETRAINED`).
        face_model: when given, checked to be the face model the weights belong to.
        device: where to put the model.

    Returns:
        The regressor in eval mode; ``regressor.info`` says which face model it predicts for,
        ``regressor.weights_metadata`` holds the whole header entry, ``regressor.weights_path`` the file.

    Raises:
        WeightsError: missing, truncated or corrupt file, foreign format, tensors that do not
            fit the recorded architecture, or a different face model.
    """
    path = _resolve(path_or_name)
    meta, tensors = _read(path, tensors=True)
    if tensors_checksum(tensors) != meta.get("tensors_sha256"):
        raise WeightsError(f"{path}: tensor checksum mismatch (the file is corrupt)")
    try:
        info = RegressorInfo.from_dict(meta["regressor"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: incomplete regressor metadata ({e})") from e
    regressor = FaceRegressor(info)
    expected = regressor.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        problems = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for what, keys in problems if keys]
        raise WeightsError(f"{path}: tensors do not fit a {info.backbone} regressor ({'; '.join(parts)})")
    regressor.load_state_dict(tensors, strict=True)
    if face_model is not None:
        check_face_model(info, face_model, path)
    regressor.weights_metadata = meta
    regressor.weights_path = path
    return regressor.to(device).eval()



def face_model_for(path_or_name: str | Path = "default", model: MorphableModel | str | Path = "default"
                   ) -> MorphableModel:
    """The face model to use with the regressor weights ``path_or_name``.

    ``model="default"`` means the face model the weights name (``weights/<name>.npz``; the
    shipped default model for weights that name none); any other spec (or a model) is taken as
    given and checked against the weights when they are loaded.

    Raises:
        WeightsError: the weights name a face model that is not installed.
    """
    from facenet3d.facemodel import load_face_model

    if isinstance(model, MorphableModel):
        return model
    if str(model) == "default":
        path = _resolve(path_or_name)
        info = RegressorInfo.from_dict(read_regressor_metadata(path)["regressor"])
        if info.face_model:
            candidate = WEIGHTS_DIR / f"{Path(info.face_model).name}.npz"
            if not candidate.is_file():
                raise WeightsError(f"{path}: the face model {info.face_model!r} it was trained for is not in "
                                   f"{WEIGHTS_DIR}; pass face_model=")
            return load_face_model(candidate)
    return load_face_model(model)


def load_pretrained(path_or_name: str | Path = "default", face_model: MorphableModel | str | Path | None = None,
                    device: torch.device | str = "cpu") -> tuple[FaceRegressor, MorphableModel]:
    """A regressor and the face model it predicts for, checked to belong together.

    Args:
        path_or_name: a ``.safetensors`` path or a shipped name (:data:`PRETRAINED`).
        face_model: the face model, or a spec for :func:`~facenet3d.facemodel.load_face_model`;
            by default the one named in the weights (:func:`face_model_for`).
        device: where to put both.

    Raises:
        WeightsError: see :func:`load_regressor`; also when the named face model is not installed.
        FaceModelFormatError: the face model file cannot be read.
    """
    path = _resolve(path_or_name)
    model = face_model_for(path, "default" if face_model is None else face_model)
    regressor = load_regressor(path, face_model=model, device=device)
    return regressor, model.to(device)
