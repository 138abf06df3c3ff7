"""Atomic file writing: a file appears under its final name complete, or not at all.

Every writer in facenet3d goes through :func:`atomic_path`: the content is written to a
hidden temporary name in the destination folder (same file system, so the final
``os.replace`` is an atomic rename) and renamed only when writing succeeded. A crash,
an exception or Ctrl-C mid-write leaves the previous file (if any) untouched and no
half-written file behind, which is what lets batch jobs resume by checking which
outputs exist.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "remove_temporaries", "write_bytes", "write_text"]

#: Names of what :func:`atomic_path` and :func:`facenet3d.export.bundle.write_image_results` write
#: before the final rename: ``.<name>.<12 hex digits>.tmp[suffix]`` (and ``.old`` for a replaced folder).
TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.(tmp|old)(\.[^.]+)?$")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds.

    The temporary name is ``.<stem>.<random>.tmp<suffix>`` in the folder of ``path``; it
    keeps the suffix so that libraries choosing a format by extension (``cv2.imwrite``,
    ``np.savez``) behave as for the final name. The folder is created if needed. On any
    exception (``KeyboardInterrupt`` included) the temporary file is deleted and the
    exception propagates; ``path`` is left as it was.

    Example:
        >>> with atomic_path("out/params.npz") as tmp:  # doctest: +SKIP
        ...     np.savez(tmp, a=np.zeros(3))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: nothing was written to the temporary file {tmp.name}")
        # Flush the data to disk before the rename so a power cut cannot leave a renamed
        # but empty file (the rename itself is atomic, the page cache is not durable).
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(text: str, path: str | Path) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (``\\n`` line ends on every OS); returns ``path``."""
    return write_bytes(text.encode("utf-8"), path)


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders that writers killed mid-write (SIGKILL, a lost
    node: no ``finally`` ran) left directly in ``folder``; returns them.

    Call it only while nothing writes into ``folder`` (before or after a run): a writer's
    temporary looks the same as a dead one's.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not TEMPORARY_NAME.match(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
