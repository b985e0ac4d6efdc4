"""`python -m fruitnet.train`: build data, model and trainer from the config; fit; test the best
checkpoint; write results.json into the run directory.

    python -m fruitnet.train                                   # basic CNN on the embedded data
    python -m fruitnet.train model=proxyless data=fruits norm=true
    python -m fruitnet.train -m model=cnn,proxyless norm=true,false
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelSummary
from omegaconf import DictConfig

from fruitnet.callbacks import ModelSizeCallback, RNGStateCheckpoint, TrainThroughput
from fruitnet.config import CONFIG_PATH, instantiate_group, run_entry, to_primitive
from fruitnet.models.proxyless import load_arch
from fruitnet.module import ClassifierModule
from fruitnet.results import environment, file_mib, test_metrics, write_json
from fruitnet.runtime import (
    MALLOC_MODES,
    AtomicCheckpointIO,
    CheckpointError,
    configure_malloc,
    device_name,
    load_checkpoint,
    resolve_ckpt_path,
    resolve_precision,
)

log = logging.getLogger("fruitnet.train")


def model_kwargs_of(cfg: DictConfig, input_size: int) -> dict[str, Any]:
    """``model.kwargs``, plus ``model.arch``'s net config (a plain dict, checked against the input
    size) so that the checkpoint's hparams rebuild the network without the file."""
    kwargs = to_primitive(cfg.model.get("kwargs")) or {}
    arch = cfg.model.get("arch")
    if arch:
        if cfg.model.name != "proxyless":
            raise ValueError(f"model.arch is for model=proxyless, not model={cfg.model.name}")
        kwargs["arch"] = load_arch(arch, input_size)
    return kwargs


def build_module(cfg: DictConfig, dm: Any) -> ClassifierModule:
    return ClassifierModule(
        model_name=cfg.model.name,
        num_classes=dm.num_classes,
        input_size=dm.input_size,
        optimizer=to_primitive(cfg.optimizer),
        scheduler=to_primitive(cfg.get("scheduler")) or None,
        model_kwargs=model_kwargs_of(cfg, dm.input_size),
        arch_path=str(cfg.model.arch) if cfg.model.get("arch") else None,
        pretrained=cfg.model.pretrained,
        weights=cfg.model.get("weights"),
        class_names=list(dm.class_names),
        task=dm.task,
        class_weights=dm.class_weights,
        label_smoothing=float(cfg.model.get("label_smoothing", 0.0)),
        preprocess=dm.preprocess,
        channels_last=bool(cfg.model.get("channels_last", True)),
        compile=bool(cfg.model.get("compile", False)),
        data_config=data_record(cfg),
    )


def data_record(cfg: DictConfig) -> dict[str, Any]:
    """The data config as the checkpoint keeps it: primitive, resolved, with an absolute root, so
    `fruitnet.eval ckpt_path=...` evaluates on the training run's data without ``data=``."""
    node = to_primitive(cfg.data)
    if node.get("root") is not None:
        node["root"] = str(Path(node["root"]).expanduser().absolute())
    return {"preset": hydra_choices()[0].get("data"), "node": node}


def init_weights_from(module: ClassifierModule, path: str) -> None:
    """`init_from=CKPT`: weights only; optimizer, scheduler and epoch start fresh."""
    state = load_checkpoint(path).get("state_dict")
    if state is None:
        raise CheckpointError(f"{path} has no 'state_dict' (not a Lightning checkpoint)")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"init_from={path} does not fit this model: {err}") from err
    log.info("initialised weights from %s (fresh optimizer)", path)


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Trainer, with the runtime choices for its device: precision and the host allocator."""
    precision = resolve_precision(cfg.trainer.get("precision", "auto"), cfg.trainer.accelerator)
    configure_malloc(cfg.get("malloc", "auto"), cfg.trainer.accelerator)
    extra = {}
    if cfg.trainer.get("enable_model_summary") is None and _find(callbacks, ModelSummary) is None:
        # callbacks.model_summary=null drops the summary; Lightning would add its own default.
        extra["enable_model_summary"] = False
    return hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],
        **extra,
    )


def _find(callbacks: list, kind: type) -> Any:
    return next((c for c in callbacks if isinstance(c, kind)), None)


def hydra_choices() -> tuple[dict[str, Any], list[str]]:
    """Chosen group options and command-line overrides (empty when composed without Hydra's app)."""
    if not HydraConfig.initialized():
        return {}, []
    hydra_cfg = HydraConfig.get()
    return dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task)


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_config(cfg: DictConfig) -> None:
    """Reject switches that Hydra accepts as strings but Python would read as true (norm=maybe)."""
    for key in ("norm", "train", "test"):
        value = cfg.get(key)
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r} (e.g. {key}=true)")
    if cfg.get("malloc", "auto") not in MALLOC_MODES:
        raise ValueError(f"malloc must be one of {MALLOC_MODES}, got {cfg.malloc!r}")
    # (fruitnet.search has no optimizer group: its two optimizers are search.* keys)
    lr = cfg.optimizer.get("lr") if cfg.get("optimizer") is not None else 0.0
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 <= lr < float("inf"):
        # Checked before the data is scanned; torch would only refuse it at fit start.
        raise ValueError(f"optimizer.lr must be a number >= 0, got {lr!r} (e.g. optimizer.lr=1e-3)")


def start_run(cfg: DictConfig) -> tuple[Path, str | None]:
    """Checks shared by train and search, before any data is read: the config, the checkpoint to
    resume (``ckpt_path``), the seed. Returns the run directory and the resolved checkpoint."""
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    # Resolved first, so a missing checkpoint fails before the dataset is scanned. In a multirun the
    # sibling folders are other jobs with other configs: only this job's own folder counts.
    runs_dir = None if _is_multirun() else output_dir.parent
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, runs_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    L.seed_everything(cfg.seed, workers=True)
    return output_dir, ckpt_path


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and/or test as configured; returns the results written to results.json."""
    started = time.perf_counter()
    output_dir, ckpt_path = start_run(cfg)

    dm = hydra.utils.instantiate(cfg.data)
    # The model needs num_classes and input_size before Lightning would call these itself.
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg, dm)
    if cfg.get("init_from"):
        init_weights_from(module, cfg.init_from)

    callbacks = instantiate_group(cfg.get("callbacks"))
    if _find(callbacks, RNGStateCheckpoint) is None:
        # Always on: without it a resumed run draws other dropout masks than an uninterrupted one.
        callbacks.append(RNGStateCheckpoint())
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)

    if cfg.get("train", True):
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    # Read before trainer.test(), which replaces callback_metrics with the test metrics.
    val_best = trainer.callback_metrics.get("val/acc_best")
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    # Read before trainer.test(ckpt_path=best): that restores the ModelCheckpoint state saved with
    # the best checkpoint, whose last_model_path is "" when the best epoch was the run's first.
    last = (ckpt_cb.last_model_path or None) if ckpt_cb is not None else None

    metrics: dict[str, Any] = {}
    if cfg.get("test", True):
        if best is None:
            log.warning(
                "no best checkpoint (fast_dev_run or checkpointing off): testing current weights"
            )
        trainer.test(module, datamodule=dm, ckpt_path=best, weights_only=True)
        metrics = test_metrics(trainer.callback_metrics, list(dm.class_names), module.test_details)

    size = _find(callbacks, ModelSizeCallback)
    speed = _find(callbacks, TrainThroughput)
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        val_best = ckpt_cb.best_model_score
    choices, overrides = hydra_choices()
    results = {
        "model": cfg.model.name,
        "data": choices.get("data", "?"),
        "experiment": choices.get("experiment"),
        "data_root": str(cfg.data.root),
        "layout": getattr(dm, "layout", None),
        "norm": bool(cfg.norm),
        "task": dm.task,
        "num_classes": dm.num_classes,
        "class_names": list(dm.class_names),
        "input_size": dm.input_size,
        "batch_size": cfg.data.batch_size,
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "lr": float(cfg.optimizer.lr),
        "seed": cfg.seed,
        "pretrained": cfg.model.pretrained,
        "arch": str(cfg.model.arch) if cfg.model.get("arch") else None,
        "weights_source": getattr(module.net, "weights_source", None),
        **(size.stats if size is not None else {}),
        "checkpoint_mb": file_mib(best),
        "test_acc": metrics.get("test_acc"),
        "val_acc": float(val_best) if val_best is not None else None,
        **metrics,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_s": time.perf_counter() - started,
        "train_images_per_s": speed.images_per_s if speed is not None else None,
        "device": device_name(cfg.trainer.accelerator),
        "precision": str(trainer.precision),
        "best_ckpt": best,
        "last_ckpt": last,
        "resumed_from": ckpt_path,
        "run_dir": str(output_dir),
        "overrides": overrides,
        "task_name": cfg.get("task_name", "train"),
        **environment(),
    }
    if trainer.is_global_zero:
        path = write_json(output_dir / "results.json", results)
        acc = results["test_acc"]
        log.info(
            "test accuracy %s; results in %s",
            f"{100 * acc:.2f} %" if acc is not None else "n/a",
            path,
        )
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = run_entry(run, cfg)
    metric = cfg.get("optimized_metric")
    return results.get(metric.replace("/", "_")) if metric else results.get("val_acc")


if __name__ == "__main__":
    main()
