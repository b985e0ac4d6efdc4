"""results.json, the record each run leaves in its folder (the report, the notebook and the
benchmarks read it): its keys, defined once here, and the one function that writes it.

Training (`fruitnet.train`) and evaluation (`fruitnet.eval`) write the same keys, eval adds its
own at the end; a key a run cannot know is null. The search writes its own record
(`fruitnet.search.report`), with `environment()` from here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

import fruitnet
from fruitnet.files import write_json

# The keys of a classifier run, in the order results.json lists them. The flattened test metrics
# (`test_metrics`: test_loss, test_f1_macro, ...) come right after val_acc.
RUN_KEYS: tuple[str, ...] = (
    # what was trained, on what
    "model", "data", "experiment", "data_root", "layout", "norm", "task", "num_classes",
    "class_names", "input_size", "batch_size", "optimizer", "lr", "seed", "pretrained", "arch",
    "weights_source",
    # size and cost (fruitnet.callbacks.ModelSizeCallback; eval recomputes all but latency)
    "params", "trainable_params", "fp32_mib", "weights_mb", "flops", "latency_ms_b1",
    "latency_batch", "latency_ms_batch", "checkpoint_mb",
    # accuracy
    "test_acc", "val_acc",
    "per_class_acc", "confusion_matrix",
    # the run itself
    "epochs", "global_step", "wall_s", "train_images_per_s", "device", "precision", "best_ckpt",
    "last_ckpt", "resumed_from", "run_dir", "overrides", "task_name",
    # environment()
    "fruitnet_version", "torch_version", "lightning_version", "finished",
)  # fmt: skip
# Added by `fruitnet.eval`: the test images, the mistakes, the checkpoint's preprocessing and the
# files written beside results.json.
EVAL_KEYS: tuple[str, ...] = ("num_test", "num_mistakes", "preprocess", "artifacts")
_METRICS_AFTER = "val_acc"


def run_record(
    values: Mapping[str, Any], metrics: Mapping[str, Any] | None = None, *, eval_keys: bool = False
) -> dict[str, Any]:
    """The record of a train or eval run: every key of `RUN_KEYS` (and `EVAL_KEYS`), in order,
    from ``values`` (missing ones null), with the flattened test ``metrics`` after val_acc."""
    keys = RUN_KEYS + (EVAL_KEYS if eval_keys else ())
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise KeyError(f"not keys of results.json (fruitnet.record.RUN_KEYS): {unknown}")
    values = {**environment(), **values}
    metrics = dict(metrics or {})
    record: dict[str, Any] = {}
    for key in keys:
        record[key] = metrics.pop(key) if key in metrics else values.get(key)
        if key == _METRICS_AFTER:
            record.update({k: v for k, v in metrics.items() if k not in keys})
    return record


def write_record(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """``run_dir/results.json``, written atomically: a reader never sees half a file."""
    return write_json(Path(run_dir) / "results.json", dict(record))


def test_metrics(metrics: Mapping[str, Any], class_names: list[str], details: Mapping[str, Any]):
    """Flatten `test/<name>` metrics into `test_<name>` keys, plus per-class accuracy and the
    confusion matrix (rows = true class, columns = predicted, in class_names order)."""
    out: dict[str, Any] = {
        k.replace("/", "_"): float(v) for k, v in metrics.items() if k.startswith("test/")
    }
    if details:
        out["per_class_acc"] = dict(zip(class_names, details["per_class_acc"], strict=True))
        out["confusion_matrix"] = details["confusion_matrix"]
    return out


def model_values(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The record's keys that a ClassifierModule's hparams tell (train and eval alike)."""
    optimizer = dict(hparams.get("optimizer") or {})
    lr = optimizer.get("lr")
    return {
        "model": hparams["model_name"],
        "task": hparams.get("task"),
        "num_classes": int(hparams["num_classes"]),
        "input_size": int(hparams["input_size"]),
        "optimizer": str(optimizer.get("_target_", "?")).rsplit(".", 1)[-1],
        "lr": float(lr) if lr is not None else None,
        "pretrained": hparams.get("pretrained"),
        "arch": hparams.get("arch_path"),
    }


def environment() -> dict[str, Any]:
    return {
        "fruitnet_version": fruitnet.__version__,
        "torch_version": torch.__version__,
        "lightning_version": L.__version__,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }
