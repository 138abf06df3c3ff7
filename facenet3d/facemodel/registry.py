"""``load_face_model(spec)``: one entry point for every face-model format.

``spec`` is ``"default"`` (the model shipped in ``weights/``), a path to a native ``.npz``,
or ``"<format>:<path>"`` with a format registered by :func:`register_format` (``ict``,
``bfm2009``, ``bfm2017``, ``flame``, ``sfm``, ``native``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.native import load_native
from facenet3d.resources import WEIGHTS_DIR

if TYPE_CHECKING:  # the registry's paths are used by the torch-free runtime
    from facenet3d.facemodel.model import MorphableModel

Loader = Callable[..., "MorphableModel"]
_FORMATS: dict[str, Loader] = {"native": load_native}

DEFAULT_MODEL_FILE = "facenet3d_head_v2.npz"


def register_format(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering a loader ``fn(path, **options) -> MorphableModel`` under ``name``."""

    def wrap(fn: Loader) -> Loader:
        _FORMATS[name] = fn
        return fn

    return wrap


def available_formats() -> list[str]:
    """Names usable as ``"<format>:<path>"``."""
    _import_loaders()
    return sorted(_FORMATS)


def default_model_path() -> Path:
    """Path of the shipped default face model."""
    return WEIGHTS_DIR / DEFAULT_MODEL_FILE


def shipped_model_path(name: str) -> Path:
    """Path of a shipped face model by name (e.g. ``"facenet3d_face_v1"``, the model the v2
    regressors were trained for); the file may be absent from a trimmed install."""
    return WEIGHTS_DIR / f"{Path(name).name}.npz"


def load_face_model(spec: str | Path = "default", **options) -> MorphableModel:
    """Load a face model.

    Args:
        spec: ``"default"``, a native ``.npz`` path, or ``"<format>:<path>"``
            (see :func:`available_formats`).
        **options: passed to the format's loader (e.g. ``region="face"`` for ICT-FaceKit).

    Raises:
        FaceModelFormatError: unknown format, missing file, or a file that is not what the
            format expects.

    Example:
        >>> model = load_face_model("ict:~/data/ict-facekit", region="face")  # doctest: +SKIP
    """
    spec = str(spec)
    if spec == "default":
        path = default_model_path()
        if not path.is_file():
            raise FaceModelFormatError(path, "the default face model is not installed; build it with "
                                             "`facenet3d build-face-model` or pass --model")
        return load_native(path)
    fmt, sep, rest = spec.partition(":")
    # "C:\\..." style drive letters and plain paths are native files.
    if not sep or len(fmt) == 1:
        return load_native(Path(spec).expanduser())
    _import_loaders()
    if fmt not in _FORMATS:
        raise FaceModelFormatError(rest, f"unknown face-model format {fmt!r}; known: {sorted(_FORMATS)}")
    return _FORMATS[fmt](Path(rest).expanduser(), **options)


def _import_loaders() -> None:
    # Loaders register themselves on import; importing here keeps start-up light.
    from facenet3d.facemodel import loaders  # noqa: F401
