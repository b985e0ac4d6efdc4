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

from fruitnet.record import kind_of
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


# The kinds of run the report shows, in the order of its tables; a study sums runs up in its own
# report and is no run here.
REPORT_KINDS = ("train", "eval", "search")
KIND_TITLES = {"train": "Training runs", "eval": "Evaluations", "search": "Architecture searches"}
# What eval records written before `kind` held at the top level although it described training
_LEGACY_EVAL_TRAINED = {
    "val_acc": "val_acc", "epochs": "ckpt_epochs", "global_step": "ckpt_global_step",
    "optimizer": "optimizer", "lr": "lr", "pretrained": "pretrained",
    "weights_source": "weights_source",
}  # fmt: skip


def load_runs(
    paths: Iterable[str | os.PathLike] | None = None,
    *,
    warn: Callable[[str], Any] | None = None,
    mlflow: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Read the runs' results.json files (default: everything under `default_logs_dir()`).

    Each run dict is the file's content plus `kind` ("train", "eval" or "search"; inferred for
    records older than the key, `fruitnet.record.kind_of`), `results_path` and `run_path` (where
    the file is now, which may differ from the recorded `run_dir` when logs were moved), a short
    `label`, and for an evaluation `trained_label` (its training run's label, or folder name).
    Files that are unreadable or no fruitnet run are skipped with a message to `warn` (stderr by
    default). Sorted by kind, data set, model, norm and label. ``mlflow``: tracking URIs whose
    runs' results.json artifacts join them (`fruitnet.tracking`), the recorded run_dir as their
    `run_path`, so they get the labels their folders would give.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    paths = [default_logs_dir()] if paths is None else list(paths)
    records: list[tuple[str, Any, str]] = []
    for path in find_result_files(paths):
        try:
            records.append((str(path), json.loads(path.read_text()), str(path.parent)))
        except (OSError, ValueError) as err:
            warn(f"skipping {path}: {err}")
    for uri in mlflow:
        from fruitnet.tracking import mlflow_records

        records.extend(mlflow_records(uri, warn))
    runs: list[dict[str, Any]] = []
    for path, data, run_path in records:
        kind = kind_of(data) if isinstance(data, dict) else None
        if kind not in REPORT_KINDS:
            why = (
                f"a {kind} record, not a run"
                if kind
                else "not a fruitnet record (no 'kind', 'model' or search keys)"
            )
            warn(f"skipping {path}: {why}")
            continue
        if kind == "eval" and "trained" not in data:
            _upgrade_legacy_eval(data)
        data["kind"] = kind
        data["results_path"] = path
        data["run_path"] = run_path
        runs.append(data)
    labels = _labels([Path(r["run_path"]) for r in runs])
    by_dir: dict[Path, str] = {}
    for run, label in zip(runs, labels, strict=True):
        run["label"] = label
        by_dir[Path(run["run_path"]).resolve()] = label
    for run in runs:
        if run["kind"] == "eval":
            run["trained_label"] = _trained_label(run, by_dir)
    runs.sort(
        key=lambda r: (
            REPORT_KINDS.index(r["kind"]), str(r.get("data")), str(r.get("model")),
            bool(r.get("norm")), r["label"],
        )
    )  # fmt: skip
    return runs


def _upgrade_legacy_eval(run: dict[str, Any]) -> None:
    """An eval record written before `kind`: its training values (the checkpoint's epoch, best
    val accuracy, optimizer) move under `trained`, as `fruitnet.record.EVAL_KEYS` has them, so
    no table shows them as the evaluation's own."""
    trained = {new: run.pop(old, None) for old, new in _LEGACY_EVAL_TRAINED.items()}
    for key in ("train_images_per_s", "latency_ms_b1", "latency_batch", "latency_ms_batch"):
        run.pop(key, None)  # training's measures, null in these records
    run.setdefault("ckpt_path", run.pop("best_ckpt", None))
    run["trained"] = trained


def _trained_label(run: dict[str, Any], by_dir: dict[Path, str]) -> str | None:
    """Where an evaluation's checkpoint was trained: that run's label when it is in the report,
    else its folder (the checkpoint file when it sits in no run folder)."""
    where = (run.get("trained") or {}).get("run_dir")
    ckpt = Path(str(run.get("ckpt_path") or ""))
    if not where and ckpt.parent.name == "checkpoints":  # run/checkpoints/x.ckpt
        where = str(ckpt.parent.parent)
    if not where:
        return f"{ckpt.parent.name}/{ckpt.name}" if run.get("ckpt_path") else None
    where = Path(where)
    return by_dir.get(where.resolve(), f"{where.parent.name}/{where.name}")


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


def run_kind(run: dict[str, Any]) -> str:
    """A run dict's kind: set by `load_runs`, else what its keys tell (a hand-made dict)."""
    return run.get("kind") or kind_of(run) or "train"


def norm_words(run: dict[str, Any]) -> str:
    """What ``norm`` did to the input, in words."""
    norm = run.get("norm")
    if norm is None:
        return "input scaling unknown"
    return "ImageNet-normalised input" if norm else "raw pixels /255 (norm=false)"


def model_words(run: dict[str, Any]) -> str:
    """The model's name; a ProxylessNAS net built from a net config (a search's arch.json) is
    named a searched net, with the folder of its config; a torchvision/timm one family/arch."""
    model = str(run.get("model", "?"))
    arch = run.get("arch")
    if model == "proxyless" and arch:
        return f"searched net ({Path(str(arch)).parent.name or Path(str(arch)).name})"
    return f"{model}/{arch}" if model in ("torchvision", "timm") and arch else model


def run_label(run: dict[str, Any], *, with_data: bool = False) -> str:
    """Which run a plot point is: "<name>: <model>, <norm in words>", plus "on <data>" when
    several data sets are shown. The name: the experiment and the run's folder label (or the
    label alone); for an evaluation "eval <label> of <training experiment or run>"."""
    where = run.get("label") or Path(str(run.get("run_dir", "?"))).name
    if run_kind(run) == "eval":
        source = (run.get("trained") or {}).get("experiment") or run.get("trained_label")
        name = f"eval {where}" + (f" of {source}" if source else "")
    else:
        experiment = run.get("experiment")
        name = f"{experiment} ({where})" if experiment else str(where)
    text = f"{name}: {model_words(run)}, {norm_words(run)}"
    return f"{text}, on {run.get('data', '?')}" if with_data else text


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
