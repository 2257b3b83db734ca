"""Timing helper shared by the speed benchmarks."""

from __future__ import annotations

import time


def best_of(fn, repeat: int) -> float:
    """The shortest wall-clock time, in seconds, of ``repeat`` calls of ``fn()``."""
    times = []
    for _ in range(int(repeat)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
