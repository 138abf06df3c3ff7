"""JSON records (``params.json``, ``landmarks.json``, reports) from numpy / torch values, atomically.

JSON has no NaN or infinity: they become ``null`` (a missing landmark stays visibly
missing instead of producing a file strict parsers reject).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from facenet3d.atomic import write_text
from facenet3d.errors import ExportError
from facenet3d.export.arrays import to_numpy

__all__ = ["to_jsonable", "write_json"]


def to_jsonable(obj: Any) -> Any:
    """A structure of dicts, lists, str, int, float, bool and None equal to ``obj``.

    Converts numpy arrays and scalars, torch tensors (to nested lists), dataclasses, enums,
    paths, tuples and sets (sets sorted); non-finite floats become None.

    Raises:
        ExportError: a value of a type JSON cannot represent (the message gives where in
            ``obj``, e.g. ``$["pose"]["yaw"]``), or a dict key that is not a string or number.
    """
    return _convert(obj, "$")


def _convert(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, enum.Enum):
        return _convert(obj.value, where)
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _convert(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, np.generic):
                key = key.item()
            # json.dumps itself turns int / float / bool keys into strings.
            if not isinstance(key, (str, int, float, bool)):
                raise ExportError(None, f"{where}: JSON object keys must be strings or numbers, got {key!r}")
            out[key] = _convert(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_convert(x, f"{where}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [_convert(x, f"{where}[{i}]") for i, x in enumerate(sorted(obj))]
    if isinstance(obj, np.ndarray) or (hasattr(obj, "detach") and hasattr(obj, "cpu")):
        a = to_numpy(obj)
        if a.dtype.kind not in "biuf":
            raise ExportError(None, f"{where}: cannot write an array of dtype {a.dtype} to JSON")
        return _convert(a.tolist(), where) if a.ndim else _convert(a.item(), where)
    raise ExportError(None, f"{where}: cannot write a value of type {type(obj).__name__!r} to JSON")


def write_json(obj: Any, path: str | Path, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON, atomically (temporary name, then rename).

    Args:
        obj: dicts / lists of numbers, strings, numpy arrays, torch tensors, dataclasses...
            (see :func:`to_jsonable`).
        path: destination ``.json``.
        indent: pretty-printing indent; None for the most compact form.

    Returns:
        ``path``.

    Example:
        >>> write_json({"expression": np.zeros(3), "yaw": np.float32(0.5)}, "params.json")  # doctest: +SKIP
    """
    try:
        data = to_jsonable(obj)
    except ExportError as e:
        raise ExportError(path, e.problem) from None
    separators = (",", ":") if indent is None else None
    text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False, separators=separators)
    return write_text(text + "\n", path)
