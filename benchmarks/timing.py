"""Timing shared by the benchmark scripts (imported from the scripts' own folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeat: int, warmup: int = 2) -> tuple[float, float, float]:
    """Median and minimum wall milliseconds, and median process CPU milliseconds, of ``fn()``
    after ``warmup`` calls. On a shared machine the CPU time (what this process actually ran) is
    the steadier figure; with one thread it is what the wall time would be on an idle machine,
    with more it is the sum over the threads."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(wall), min(wall), statistics.median(cpu)
