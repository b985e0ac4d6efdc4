"""The one timing helper: warm-up calls, a device sync around each timed call, the median of the
repeats, and the best of several rounds. The size callback, the search's latency table, the
export check and the benchmarks all time with it, so their figures mean the same thing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so that a clock read after it covers the work (no-op on a CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn: Callable[[], Any],
    *,
    device: torch.device | str | None = None,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 1,
) -> float:
    """Median wall time of ``fn()`` in ms after ``warmup`` untimed calls.

    With ``rounds`` > 1 the median is taken that many times and the smallest counts: a round in
    which another process took the cores reads high, never low."""
    medians = []
    for _ in range(max(1, rounds)):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(max(1, repeats)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return min(medians) * 1000.0
