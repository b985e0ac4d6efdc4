"""The arithmetic of bench/recipes.py: the budget split between stages, Lightning's max_time, the
seeds' spread and the verdict drawn from it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def stage_caps(budget_s: float, epochs: Sequence[int]) -> list[float]:
    """Cumulative max_time of each stage, splitting the budget in proportion to the epochs.

    Lightning's Timer is saved in the checkpoint and restored on resume, so stage k's cap counts
    the time of the stages before it: the last cap is the whole budget.
    """
    if not epochs or any(e <= 0 for e in epochs):
        raise ValueError(f"every stage needs a positive epoch count, got {list(epochs)}")
    total = sum(epochs)
    caps, done = [], 0
    for e in epochs:
        done += e
        caps.append(budget_s * done / total)
    caps[-1] = float(budget_s)  # no rounding drift on the last one
    return caps


def max_time(seconds: float) -> str:
    """Lightning's "DD:HH:MM:SS" (whole seconds, at least 1)."""
    total = max(1, round(seconds))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0, "mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
    }


def verdict(study: Sequence[float], best: Sequence[float]) -> str:
    """Does best beat study beyond the seeds' spread? Beyond = every best seed above every study
    seed (the min-max ranges do not overlap), a stricter test than mean differences."""
    if not study or not best:
        return "not measured (a recipe has no finished run)"
    s, b = spread(study), spread(best)
    diff = 100 * (b["mean"] - s["mean"])
    if min(len(study), len(best)) < 2:
        word = "better" if diff > 0 else "worse" if diff < 0 else "equal"
        return f"{word} by {diff:+.2f} points (one seed: no spread to compare with)"
    if b["min"] > s["max"]:
        gap = 100 * (b["min"] - s["max"])
        return (
            f"**beats** by {diff:+.2f} points on the mean; its worst seed is {gap:.2f} points "
            "above the study's best seed"
        )
    if s["min"] > b["max"]:
        return f"**loses** by {diff:+.2f} points, beyond the seeds' spread"
    return f"{diff:+.2f} points on the mean, **within** the seeds' spread (ranges overlap)"


def combine_stages(stages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One seed's result from its stages' results.json: test/val/epochs of the last stage, times
    summed over the stages."""
    last = dict(stages[-1])
    last["wall_s"] = sum(float(s.get("wall_s") or 0.0) for s in stages)
    last["process_s"] = sum(float(s.get("process_s") or 0.0) for s in stages)
    last["stage_epochs"] = [s.get("epochs") for s in stages]
    return last
