"""What every evaluation shares: the per-item loop with failures, summaries, sampling, the report file."""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from facenet3d.errors import Facenet3DError

T = TypeVar("T")
R = TypeVar("R")


class EvaluationDataError(Facenet3DError, ValueError):
    """A benchmark folder or annotation file is missing or not what the evaluation expects."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def evenly_spaced(items: Sequence[T], limit: int | None) -> list[T]:
    """``limit`` items spread evenly over ``items`` (first and last included), in order.

    A deterministic systematic sample: for a list sorted by file name it keeps every k-th
    item, so a subset has the same mix (poses, groups) as the whole in expectation.
    """
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        return []
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def summary(values: Iterable[float]) -> dict[str, float | int | None]:
    """``{"median", "mean", "std", "n"}`` of finite values (None entries when there are none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"median": None, "mean": None, "std": None, "n": 0}
    return {"median": float(np.median(v)), "mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


@dataclass
class ItemRun:
    """Runs one function over items, timing each, recording failures instead of stopping.

    A :class:`~facenet3d.errors.Facenet3DError` or ``OSError`` (unreadable file, no face, ...)
    is recorded with the item's name and the run goes on; anything else is a bug and propagates.
    """

    failures: list[dict] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def run(self, items: Sequence[T], fn: Callable[[T], R], name: Callable[[T], str] = str,
            progress: bool = True, desc: str = "evaluate") -> list[tuple[T, R]]:
        """``[(item, fn(item))]`` for the items that succeeded."""
        from tqdm import tqdm

        done: list[tuple[T, R]] = []
        bar = tqdm(items, desc=desc, unit="item", disable=not progress, dynamic_ncols=True, file=sys.stderr)
        for item in bar:
            t0 = time.perf_counter()
            try:
                done.append((item, fn(item)))
            except (Facenet3DError, OSError) as e:
                self.failures.append({"item": name(item), "error": str(e)})
            self.seconds.append(time.perf_counter() - t0)
            bar.set_postfix(failed=len(self.failures))
        return done

    @property
    def seconds_per_item(self) -> float | None:
        return float(np.mean(self.seconds)) if self.seconds else None


def environment() -> dict[str, Any]:
    """Where the figures were measured (machine, threads, versions, the git commit when run from a checkout)."""
    import torch

    from facenet3d import __version__

    return {"facenet3d": __version__, "git": _git_revision(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor()}


def _git_revision() -> str | None:
    """``<commit>[-dirty]`` of the checkout the package runs from, or None outside one."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_report(report: dict, path: str | Path) -> Path:
    """Write a report as JSON atomically (numpy values converted, NaN as null)."""
    from facenet3d.export.jsonfile import write_json

    path = Path(path)
    write_json(report, path)
    return path
