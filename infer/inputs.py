"""Inputs of a photo run: photos and folders, plus list files and Parquet manifests of photo paths.

Data sets of millions of photos come as a list (one path per line) or a table; both are read
here into the paths :func:`facenet3d.batch.collect_inputs` takes, whichever engine runs them:

- a list file (``.txt``, ``.lst``, ``.list``): one path per line; blank lines and lines
  starting with ``#`` are ignored;
- a Parquet manifest (``.parquet``): the ``path`` column (or the table's only column), needs
  ``pyarrow`` (``pip install 'facenet3d[ray]'``).

Relative paths are relative to the folder of the list or manifest, so a data set's list
travels with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from facenet3d.errors import Facenet3DError, MissingExtraError

#: Suffixes read as lists of paths, one a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: Suffixes read as Parquet manifests.
MANIFEST_SUFFIXES = (".parquet",)
#: The manifest column that holds the photo paths.
MANIFEST_COLUMN = "path"


class ManifestError(Facenet3DError, ValueError):
    """A list file or manifest cannot be read, or has no column of paths."""


def is_path_list(item: str | os.PathLike) -> bool:
    """Whether ``item`` is a list file or a manifest (by its suffix; folders never are)."""
    p = Path(item)
    return p.suffix.lower() in LIST_SUFFIXES + MANIFEST_SUFFIXES and not p.is_dir()


def read_path_list(path: str | os.PathLike) -> list[Path]:
    """The photo paths a list file or a Parquet manifest names, in order.

    Raises:
        ManifestError: unreadable file, or a manifest without a ``path`` column.
        MissingExtraError: a Parquet manifest without pyarrow installed.
    """
    path = Path(path)
    base = path.parent
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        names = _manifest_column(path)
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
        names = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    return [base / Path(n).expanduser() for n in names]  # an absolute name stays as it is


def _manifest_column(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("reading a Parquet manifest", "pyarrow", "ray") from None
    try:
        schema = pq.read_schema(path)
        columns = schema.names
        column = MANIFEST_COLUMN if MANIFEST_COLUMN in columns else (columns[0] if len(columns) == 1 else None)
        if column is None:
            raise ManifestError(f"{path}: a manifest needs a {MANIFEST_COLUMN!r} column of photo paths "
                                f"(it has {columns})")
        values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    except ManifestError:
        raise
    except Exception as e:  # pyarrow's ArrowInvalid / OSError on a file that is not Parquet
        raise ManifestError(f"{path}: not a readable Parquet manifest ({e})") from None
    if any(not isinstance(v, str) for v in values):
        raise ManifestError(f"{path}: column {column!r} must hold paths (strings), without nulls")
    return values


def expand_path_lists(inputs: list[str | os.PathLike]) -> tuple[list[str], list[tuple[Path, str]]]:
    """``inputs`` with every list file and manifest replaced by the paths it names.

    Returns:
        ``(inputs, failures)``: the inputs for :func:`facenet3d.batch.collect_inputs`, and
        ``(list, message)`` for each list or manifest that cannot be read.

    Raises:
        MissingExtraError: a Parquet manifest without pyarrow (the whole run needs it).
    """
    out: list[str] = []
    failures: list[tuple[Path, str]] = []
    for item in inputs:
        if not is_path_list(item) or not Path(item).exists():
            out.append(str(item))  # a missing path is reported by collect_inputs like any other
            continue
        try:
            paths = read_path_list(item)
        except ManifestError as e:
            failures.append((Path(item), str(e)))
            continue
        if not paths:
            failures.append((Path(item), f"{item}: names no photos"))
        out.extend(str(p) for p in paths)
    return out, failures
