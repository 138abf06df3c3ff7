"""Labels the shared photo sets carry: a ``labels.csv`` beside the photos (identity, emotion, ...)
and UTKFace's file names (age, gender, race)."""

from __future__ import annotations

import csv
import os
import re
from functools import lru_cache
from pathlib import Path

_UTK = re.compile(r"^(\d+)_(\d)_(\d)_\d+")


@lru_cache(maxsize=256)
def _folder_labels(folder: str) -> dict[str, dict[str, str]]:
    table = Path(folder) / "labels.csv"
    if not table.is_file():
        return {}
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    key = next((k for k in ("image", "file", "filename", "path") if rows and k in rows[0]), None)
    if key is None:
        return {}
    return {r[key]: {k: v for k, v in r.items() if k != key and k is not None} for r in rows}


def photo_labels(path: str | os.PathLike) -> dict:
    """Labels of a photo from a ``labels.csv`` beside it and/or its UTKFace-style file name."""
    p = Path(path)
    labels: dict = dict(_folder_labels(str(p.parent)).get(p.name, {}))
    m = _UTK.match(p.name)
    if m and p.name.endswith(".chip.jpg"):
        labels.update(age=int(m.group(1)), gender=int(m.group(2)), race=int(m.group(3)))
    return labels
