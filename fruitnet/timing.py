"""The one timing helper: warm-up calls, a device sync around each timed call, the median of the
repeats, and the best of several rounds (`median_ms`; `interleaved_ms` for several callables at
once, rounds spread over all of them and, optionally, each reading taken against a yardstick).
The size callback, the search's latency table, the export check and the benchmarks all time with
it, so their figures mean the same thing."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def sync(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so that a clock read after it covers the work (no-op on a CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn: Callable[[], Any], device: Any, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    return min(_median_s(fn, device, warmup, repeats) for _ in range(max(1, rounds))) * 1000.0


def interleaved_ms(
    fns: Sequence[Callable[[], Any]],
    *,
    yardstick: Callable[[], Any] | None = None,
    yardstick_ms: float | None = None,
    device: torch.device | str | None = None,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
) -> list[float]:
    """Medians in ms of several callables, timed in ``rounds`` rounds that visit each in turn.

    A shared CPU slows down in spells of seconds to minutes. Rounds taken back to back fall
    inside one spell; rounds spread over every entry give a spell one round of an entry. Without
    ``yardstick`` an entry's time is its best round. With one, a fixed callable timed before the
    first entry and after every entry, a reading counts as its ratio to the mean of the yardstick
    readings either side of it, and an entry's time is the median of its ratios times the
    yardstick's best reading (or ``yardstick_ms``, its time in an earlier call, to put this
    call's entries on that call's scale). A spell that lasts longer than one entry slows both
    sides of the ratio and cancels (bench/LATENCY.md: the search's predictions of nets timed
    later, one by one against this way)."""
    best = [math.inf] * len(fns)
    ratios: list[list[float]] = [[] for _ in fns]
    yard: list[float] = []
    for _ in range(max(1, rounds)):
        if yardstick is not None:
            yard.append(_median_s(yardstick, device, warmup, repeats))
        for i, fn in enumerate(fns):
            t = _median_s(fn, device, warmup, repeats)
            best[i] = min(best[i], t)
            if yardstick is not None:
                yard.append(_median_s(yardstick, device, warmup, repeats))
                ratios[i].append(2 * t / (yard[-2] + yard[-1]))
    if yardstick is None:
        return [b * 1000.0 for b in best]
    scale = yardstick_ms if yardstick_ms is not None else min(yard) * 1000.0
    return [statistics.median(r) * scale for r in ratios]
