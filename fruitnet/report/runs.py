"""Finding and reading runs: results.json files below paths or globs, their short labels, and the
per-epoch rows of each run's csv/metrics.csv."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fruitnet.settings import root_dir

RESULTS_NAME = "results.json"


def default_logs_dir() -> Path:
    """`paths.log_dir` of the default config: `$FRUITNET_ROOT/logs`, else `./logs`."""
    return root_dir() / "logs"


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_result_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every results.json given directly, below a given directory, or matched by a glob.

    A directory is searched recursively, so a multirun folder (`<sweep>/<n>/results.json`) or the
    whole `logs/` tree works. A glob may match directories or results.json files. The result is
    sorted and free of duplicates.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        text = os.fspath(raw)
        matches = [Path(text)] if Path(text).exists() or not _has_magic(text) else []
        if not matches:
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
        for match in matches:
            if match.is_file() and match.name == RESULTS_NAME:
                found[match.resolve()] = None
            elif match.is_dir():
                for f in sorted(match.rglob(RESULTS_NAME)):
                    if f.is_file():
                        found[f.resolve()] = None
    return sorted(found)


def load_runs(
    paths: Iterable[str | os.PathLike] | None = None, *, warn: Callable[[str], Any] | None = None
) -> list[dict[str, Any]]:
    """Read the runs' results.json files (default: everything under `default_logs_dir()`).

    Each run dict is the file's content plus `results_path` and `run_path` (where the file is
    now, which may differ from the recorded `run_dir` when logs were moved) and a short `label`.
    Files that are unreadable or are not training results are skipped with a message to `warn`
    (stderr by default). Sorted by data set, model, norm and label.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    paths = [default_logs_dir()] if paths is None else list(paths)
    runs: list[dict[str, Any]] = []
    for path in find_result_files(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            warn(f"skipping {path}: {err}")
            continue
        if not isinstance(data, dict) or "model" not in data:
            warn(f"skipping {path}: not a fruitnet training result (no 'model' key)")
            continue
        data["results_path"] = str(path)
        data["run_path"] = str(path.parent)
        runs.append(data)
    labels = _labels([Path(r["run_path"]) for r in runs])
    for run, label in zip(runs, labels, strict=True):
        run["label"] = label
    runs.sort(
        key=lambda r: (str(r.get("data")), str(r.get("model")), bool(r.get("norm")), r["label"])
    )
    return runs


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short, unique names: each run directory relative to what all of them share."""
    if not run_dirs:
        return []
    if len(run_dirs) == 1:
        return [run_dirs[0].name]
    common = Path(os.path.commonpath([str(p) for p in run_dirs]))
    # Sibling runs (a multirun's 0/, 1/, ...) keep their parent's name for context.
    if any(p.parent == common for p in run_dirs):
        common = common.parent
    return [str(p.relative_to(common)) for p in run_dirs]


def run_label(run: dict[str, Any], *, with_data: bool = False) -> str:
    """Plot label: "model/norm" or "model/raw", plus "@data" when several data sets are shown."""
    norm = run.get("norm")
    text = f"{run.get('model', '?')}/{'norm' if norm else 'raw' if norm is not None else '?'}"
    return f"{text}@{run.get('data', '?')}" if with_data else text


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of `<run>/csv/metrics.csv` (CSVLogger), empty cells dropped, values as floats.
    An empty list when the run has no CSV log (fast_dev_run, logger=null)."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    rows: list[dict[str, float]] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            parsed = {}
            for key, value in row.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    continue
            rows.append(parsed)
    return rows


def epoch_curve(rows: Sequence[dict[str, float]], column: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of a per-epoch metric, e.g. "val/acc" or "train/loss_epoch"; the last
    value logged in an epoch wins (a resumed run's CSV holds only its own epochs)."""
    by_epoch: dict[int, float] = {}
    for row in rows:
        if column in row and "epoch" in row:
            by_epoch[int(row["epoch"])] = row[column]
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def to_number(value: Any) -> float | None:
    """A run's value as a float; None for a missing, non-numeric, boolean or NaN value."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
