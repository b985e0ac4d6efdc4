"""results.json, the record each run leaves in its folder (the report, the notebook and the
benchmarks read it): its keys, defined once here, and the one function that writes it.

Every record says what it is in ``kind`` (`KINDS`). Training (`fruitnet.train`) writes
`RUN_KEYS`; evaluation (`fruitnet.eval`) writes `EVAL_KEYS`: its own measurements only, with
the training run the checkpoint comes from under ``trained`` (`TRAINED_KEYS`), so no key of an
eval record holds another run's number. A key a run cannot know is null. The search writes its
own record (`fruitnet.search.report`, ``kind: search``), with `environment()` from here.
Records written before ``kind`` existed are told apart by `kind_of`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import fruitnet
from fruitnet.files import write_json

# What a results.json can be: a training run, an evaluation of a checkpoint, an architecture
# search, or a study (several runs summed up, e.g. bench/recipes).
KINDS: tuple[str, ...] = ("train", "eval", "search", "study")

# The keys of a training run, in the order results.json lists them. The flattened test metrics
# (`test_metrics`: test_loss, test_f1_macro, ...) come right after val_acc.
RUN_KEYS: tuple[str, ...] = (
    "kind",
    # what was trained, on what
    "model", "data", "experiment", "data_root", "layout", "norm", "task", "num_classes",
    "class_names", "input_size", "batch_size", "optimizer", "lr", "seed", "pretrained", "arch",
    "weights_source",
    # size and cost (fruitnet.callbacks.ModelSizeCallback)
    "params", "trainable_params", "fp32_mib", "weights_mb", "flops", "latency_ms_b1",
    "latency_batch", "latency_ms_batch", "checkpoint_mb",
    # accuracy; threshold: the two-class cut on P(class 1) the test metrics used (null: argmax)
    "threshold", "test_acc", "val_acc",
    "per_class_acc", "confusion_matrix",
    # validation against test (`val_check`): is the validation split like the test data?
    "val_test_gap", "val_warning",
    # the run itself
    "epochs", "global_step", "wall_s", "train_images_per_s", "device", "precision", "best_ckpt",
    "last_ckpt", "resumed_from", "run_dir", "overrides", "task_name",
    # environment()
    "fruitnet_version", "torch_version", "lightning_version", "finished",
)  # fmt: skip
# The keys of an evaluation (`fruitnet.eval`): what it measured on the checkpoint and the test
# split; the flattened test metrics come right after test_acc.
EVAL_KEYS: tuple[str, ...] = (
    "kind",
    # what was evaluated, on what
    "model", "arch", "data", "data_root", "layout", "norm", "task", "num_classes", "class_names",
    "input_size", "batch_size", "seed", "ckpt_path", "preprocess",
    # the checkpoint's network, measured here
    "params", "trainable_params", "fp32_mib", "weights_mb", "flops", "checkpoint_mb",
    # accuracy on this test split (threshold: as in RUN_KEYS)
    "threshold", "test_acc",
    "per_class_acc", "confusion_matrix", "num_test", "num_mistakes",
    # the checkpoint's validation accuracy against this test split (`val_check`)
    "val_test_gap", "val_warning",
    # adapt_bn=true: {"layers", "images"} whose BatchNorm statistics the scores used (null: the
    # checkpoint's own; fruitnet.batchnorm)
    "adapt_bn",
    # two classes with Grad-CAM: mean share of the maps' positive mass in the central box
    # (fruitnet.explain.focus), over all test images and per class
    "cam_central_share", "cam_central_share_per_class",
    # this evaluation: its own time, device and files
    "wall_s", "device", "precision", "run_dir", "overrides", "task_name", "artifacts",
    # the training run the checkpoint comes from (TRAINED_KEYS)
    "trained",
    # environment()
    "fruitnet_version", "torch_version", "lightning_version", "finished",
)  # fmt: skip
# An eval record's ``trained``: where the training run is and its key numbers, from the
# checkpoint and, when it sits in its run folder (run/checkpoints/x.ckpt), that run's results.json.
TRAINED_KEYS: tuple[str, ...] = (
    "path", "run_dir", "experiment", "data", "optimizer", "lr", "pretrained", "weights_source",
    # the checkpoint: epochs completed and steps taken when it was saved, best val accuracy then
    "ckpt_epochs", "ckpt_global_step", "val_acc",
    # the training run as a whole (its results.json)
    "epochs", "test_acc", "wall_s", "train_images_per_s", "latency_ms_b1", "finished",
)  # fmt: skip
_METRICS_AFTER = {"train": "val_acc", "eval": "test_acc"}
# Validation accuracy this far above test accuracy (10 points) says the validation split does not
# look like the test data: it picks checkpoints and thresholds for data the model will not see.
VAL_GAP_WARN = 0.10

log = logging.getLogger("fruitnet.record")


def val_check(val_acc: float | None, test_acc: float | None) -> dict[str, Any]:
    """``val_test_gap`` (validation minus test accuracy) and ``val_warning`` (the gap is over
    `VAL_GAP_WARN`), with one warning line when it is; null when either is unknown."""
    if val_acc is None or test_acc is None:
        return {"val_test_gap": None, "val_warning": None}
    gap = float(val_acc) - float(test_acc)
    warn = gap > VAL_GAP_WARN
    if warn:
        log.warning(
            "validation accuracy %.1f %% is %.1f points above test accuracy %.1f %%: the "
            "validation split does not look like the test data (README: carve it by patient "
            "or source, data.val_group)",
            100 * float(val_acc), 100 * gap, 100 * float(test_acc),
        )  # fmt: skip
    return {"val_test_gap": gap, "val_warning": warn}


def run_record(
    values: Mapping[str, Any], metrics: Mapping[str, Any] | None = None, *, kind: str = "train"
) -> dict[str, Any]:
    """The record of a train (`RUN_KEYS`) or eval (`EVAL_KEYS`) run: every key, in order, from
    ``values`` (missing ones null), with the flattened test ``metrics`` after val_acc (train) or
    test_acc (eval)."""
    keys = {"train": RUN_KEYS, "eval": EVAL_KEYS}[kind]
    unknown = sorted(set(values) - set(keys))
    if unknown:
        name = "RUN_KEYS" if kind == "train" else "EVAL_KEYS"
        raise KeyError(f"not keys of a {kind} results.json (fruitnet.record.{name}): {unknown}")
    values = {**environment(), **values, "kind": kind}
    metrics = dict(metrics or {})
    if kind == "train" and "val_test_gap" not in values:
        values.update(val_check(values.get("val_acc"), metrics.get("test_acc")))
    record: dict[str, Any] = {}
    for key in keys:
        record[key] = metrics.pop(key) if key in metrics else values.get(key)
        if key == _METRICS_AFTER[kind]:
            record.update({k: v for k, v in metrics.items() if k not in keys})
    return record


def write_record(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """``run_dir/results.json``, written atomically: a reader never sees half a file."""
    if record.get("kind") not in KINDS:
        raise ValueError(f"a results.json needs a kind out of {KINDS}, got {record.get('kind')!r}")
    return write_json(Path(run_dir) / "results.json", dict(record))


def kind_of(record: Mapping[str, Any]) -> str | None:
    """A record's kind: its ``kind`` key, or for records older than that key, what its keys tell
    (eval: task_name "eval" or num_test; search: arch_path or chosen; train: a model). None when
    it is no fruitnet record."""
    kind = record.get("kind")
    if kind is not None:
        return str(kind)
    if record.get("task_name") == "eval" or "num_test" in record:
        return "eval"
    if "arch_path" in record or "chosen" in record:
        return "search"
    return "train" if "model" in record else None


def trained_values(
    ckpt_path: str | Path, stored: Mapping[str, Any], hparams: Mapping[str, Any]
) -> dict[str, Any]:
    """An eval record's ``trained`` (`TRAINED_KEYS`): the checkpoint's counters (``stored``: its
    epoch, global_step, val_acc_best), how it was trained (its ``hparams``), and the training
    run's key numbers from run/results.json when the checkpoint sits in run/checkpoints/."""
    epoch = stored.get("epoch")
    how = model_values(hparams)
    trained: dict[str, Any] = dict.fromkeys(TRAINED_KEYS)
    trained.update(
        optimizer=how["optimizer"],
        lr=how["lr"],
        pretrained=how["pretrained"],
        # Lightning stores the 0-based epoch it saved in; epoch-end checkpoints completed it.
        ckpt_epochs=int(epoch) + 1 if epoch is not None else None,
        ckpt_global_step=stored.get("global_step"),
        val_acc=stored.get("val_acc_best"),
    )
    path = Path(ckpt_path).resolve().parent.parent / "results.json"
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError):
        return trained
    if not isinstance(run, dict) or kind_of(run) != "train":
        return trained
    from_run = ("experiment", "data", "weights_source", "epochs", "test_acc", "wall_s",
                "train_images_per_s", "latency_ms_b1", "finished")  # fmt: skip
    trained.update({k: run.get(k) for k in from_run}, path=str(path), run_dir=str(path.parent))
    if trained["val_acc"] is None:
        trained["val_acc"] = run.get("val_acc")
    return trained


def test_metrics(metrics: Mapping[str, Any], class_names: list[str], details: Mapping[str, Any]):
    """Flatten `test/<name>` metrics into `test_<name>` keys, plus per-class accuracy and the
    confusion matrix (rows = true class, columns = predicted, in class_names order)."""
    out: dict[str, Any] = {
        k.replace("/", "_"): float(v) for k, v in metrics.items() if k.startswith("test/")
    }
    if details:
        out["per_class_acc"] = dict(zip(class_names, details["per_class_acc"], strict=True))
        out["confusion_matrix"] = details["confusion_matrix"]
        out["threshold"] = details.get("threshold")
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
    # Imported here: the report reads records (kind_of) without paying Lightning's import.
    import lightning as L

    return {
        "fruitnet_version": fruitnet.__version__,
        "torch_version": torch.__version__,
        "lightning_version": L.__version__,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }
