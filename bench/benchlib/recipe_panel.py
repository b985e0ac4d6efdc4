"""What a comparison of several recipes against a goal adds to bench/recipes.py (the chest X-ray
recipe of issue 27): each run's checkpoint evaluated with Grad-CAM (the central-mass share), the
PASS / MISS verdict against the goal, and the merge that rewrites only the comparisons a
``--only`` call ran in an existing RECIPES.md, keeping every other section as it is."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.common import run_logged
from benchlib.recipe_stats import spread

# What the eval record adds to a run's result (the train record has the rest)
EXPLAINED_KEYS = ("cam_central_share", "cam_central_share_per_class", "threshold")
GOAL_NAMES = {"test_acc": "accuracy", "test_specificity": "specificity",
              "test_recall": "sensitivity", "test_auroc": "AUROC"}  # fmt: skip
# The sections of RECIPES.md that come after the comparisons
TAIL_HEADINGS = ("## Not in this run", "## Failed runs", "## History of the tuning")


def explain_run(result: dict[str, Any], eval_dir: Path) -> dict[str, Any]:
    """`python -m fruitnet.eval` on the run's best checkpoint with Grad-CAM on (its own data,
    its own threshold): the central-mass share of the maps. Empty when the eval fails (the
    table then shows a dash; its log stays in eval_dir)."""
    ckpt = result.get("best_ckpt") or result.get("last_ckpt")
    if not ckpt:
        return {}
    eval_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fruitnet.eval", f"ckpt_path={ckpt}", "explain=true",
           "verbose=false", f"hydra.run.dir={eval_dir}"]  # fmt: skip
    print("  $", shlex.join(cmd[1:]), flush=True)
    code, _ = run_logged(cmd, eval_dir / "stdout.log")
    return read_explained(eval_dir) if code == 0 else {}


def read_explained(eval_dir: Path) -> dict[str, Any]:
    path = eval_dir / "results.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {k: record.get(k) for k in EXPLAINED_KEYS}


def goal_met(values: Sequence[float], lowest: float) -> bool:
    """Beyond the seeds' spread: every seed reaches the goal, not only the mean."""
    return bool(values) and min(values) >= lowest


def goal_verdict(label: str, runs: Sequence[dict[str, Any]], goal: Sequence[tuple[str, float]]):
    """One line: PASS when every seed of ``runs`` reaches every goal, else MISS and which."""
    if not runs:
        return f"`{label}`: not measured (no finished run)"
    parts, met = [], True
    for key, lowest in goal:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        ok = goal_met(values, lowest)
        met &= ok
        s = spread(values)
        parts.append(
            f"{GOAL_NAMES.get(key, key)} >= {100 * lowest:.0f} %: mean {100 * s['mean']:.1f}, "
            f"worst seed {100 * s['min']:.1f} ({'met' if ok else 'not met'})"
        )
    word = "**PASS**" if met else "**MISS**"
    return f"{word}: `{label}` over {len(runs)} seed(s), " + "; ".join(parts)


def share_cell(runs: Sequence[dict[str, Any]]) -> str:
    values = [float(r["cam_central_share"]) for r in runs if r.get("cam_central_share") is not None]
    if not values:
        return "\u2013"
    s = spread(values)
    return f"{s['mean']:.2f} ± {s['std']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f}"


def threshold_cell(runs: Sequence[dict[str, Any]]) -> str:
    values = sorted(float(r["threshold"]) for r in runs if r.get("threshold") is not None)
    return "/".join(f"{v:.2f}" for v in values) if values else "argmax"


# --------------------------------------------------------------------------- merging


def _section_end(lines: list[str], start: int) -> int:
    """The line of the next ``## `` heading after ``start`` (or the end)."""
    return next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))


def _section(lines: list[str], key: str) -> tuple[int, int] | None:
    """[start, end) of the ``## <key>:`` section (up to the next ``## `` heading)."""
    head = f"## {key}:"
    start = next((i for i, line in enumerate(lines) if line.startswith(head)), None)
    return None if start is None else (start, _section_end(lines, start))


def merge(old: str, new: str, keys: Sequence[str], note: str | None) -> str:
    """``old`` RECIPES.md with the sections and summary lines of ``keys`` taken from ``new``
    (replaced where ``old`` has them, added otherwise) and ``note`` (this call's command, None:
    none) added to its Command line; every other line of ``old`` stays as it is."""
    lines, fresh = old.splitlines(), new.splitlines()
    for key in keys:
        got = _section(fresh, key)
        if got is None:
            continue
        block = fresh[got[0] : got[1]]
        where = _section(lines, key)
        if where is not None:
            lines[where[0] : where[1]] = block
        else:
            tail = [i for i, line in enumerate(lines) if line.startswith(TAIL_HEADINGS)]
            at = tail[0] if tail else len(lines)
            lines[at:at] = block
        bullet = next((line for line in fresh if line.startswith(f"- {key} (")), None)
        mine = [i for i, line in enumerate(lines) if line.startswith(f"- {key} (")]
        if bullet and mine:
            lines[mine[0]] = bullet
        elif bullet:
            summary = next(i for i, line in enumerate(lines) if line.startswith("## Summary"))
            end = _section_end(lines, summary)
            bullets = [i for i in range(summary, end) if lines[i].startswith("- ")]
            lines.insert((bullets[-1] + 1) if bullets else summary + 2, bullet)
        # No longer "not in this run"
        lines = [line for line in lines if not line.startswith(f"- `{key}` (")]
    for i, line in enumerate(lines if note else []):
        if line.startswith("Command: "):
            lines[i] = line.removesuffix(".") + f"; then {note}."
            break
    return "\n".join(lines) + "\n"
