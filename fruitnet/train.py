"""`python -m fruitnet.train`: build data, model and trainer from the config; fit; test the best
checkpoint; write results.json into the run directory.

    python -m fruitnet.train                                   # basic CNN on the embedded data
    python -m fruitnet.train model=proxyless data=fruits norm=true
    python -m fruitnet.train -m model=cnn,proxyless norm=true,false
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import hydra
from omegaconf import DictConfig

from fruitnet.config import CONFIG_PATH, check_config, check_keys, hydra_choices, run_entry

log = logging.getLogger("fruitnet.train")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and/or test as configured; returns the results written to results.json."""
    started = time.perf_counter()
    check_config(cfg)
    # Loaded after the config checks: torch and Lightning take 5 s to import on a 2-core CPU,
    # and `--help`, `--cfg job` or a bad value answer without them.
    from fruitnet import assemble, record

    output_dir, ckpt_path = assemble.start_run(cfg)
    dm = assemble.build_datamodule(cfg.data, cfg=cfg)
    module = assemble.build_module(cfg, dm)
    callbacks = assemble.run_callbacks(cfg)
    trainer = assemble.build_trainer(cfg, callbacks)

    if cfg.get("train", True):
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    # Read before trainer.test(), which replaces callback_metrics with the test metrics.
    val_best = trainer.callback_metrics.get("val/acc_best")
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    # Read before trainer.test(ckpt_path=best): that restores the checkpoint callback's state saved
    # with the best checkpoint, whose last_model_path is "" when the best epoch was the run's first.
    last = (ckpt_cb.last_model_path or None) if ckpt_cb is not None else None
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        val_best = ckpt_cb.best_model_score

    metrics: dict[str, Any] = {}
    if cfg.get("test", True):
        if best is None:
            log.warning(
                "no best checkpoint (fast_dev_run or checkpointing off): testing current weights"
            )
        trainer.test(module, datamodule=dm, ckpt_path=best, weights_only=True)
        metrics = record.test_metrics(
            trainer.callback_metrics, list(dm.class_names), module.test_details
        )

    values = {
        "val_acc": float(val_best) if val_best is not None else None,
        "best_ckpt": best,
        "last_ckpt": last,
        "resumed_from": ckpt_path,
        "run_dir": str(output_dir),
        "wall_s": time.perf_counter() - started,
    }
    results = record.run_record(
        run_values(cfg, dm, module, trainer, callbacks, values), metrics, kind="train"
    )
    if trainer.is_global_zero:
        path = record.write_record(output_dir, results)
        from fruitnet.tracking import finish

        finish(trainer.loggers, results, cfg)
        acc = results["test_acc"]
        log.info(
            "test accuracy %s; results in %s",
            f"{100 * acc:.2f} %" if acc is not None else "n/a",
            path,
        )
    return results


def run_values(cfg, dm, module, trainer, callbacks, values: dict[str, Any]) -> dict[str, Any]:
    """The record's values of a training run: the config, the data, the model's size and the
    trainer's counters, with ``values`` (what `run` read along the way)."""
    from fruitnet.assemble import find_callback
    from fruitnet.callbacks import ModelSizeCallback, TrainThroughput
    from fruitnet.files import file_mib
    from fruitnet.record import model_values
    from fruitnet.runtime import device_name

    size = find_callback(callbacks, ModelSizeCallback)
    speed = find_callback(callbacks, TrainThroughput)
    choices, overrides = hydra_choices()
    return {
        **model_values(module.hparams),
        "data": choices.get("data", "?"),
        "experiment": choices.get("experiment"),
        "data_root": str(cfg.data.root),
        "layout": getattr(dm, "layout", None),
        "norm": bool(cfg.norm),
        "class_names": list(dm.class_names),
        "batch_size": cfg.data.batch_size,
        "seed": cfg.seed,
        "weights_source": getattr(module.net, "weights_source", None),
        **(size.stats if size is not None else {}),
        "checkpoint_mb": file_mib(values["best_ckpt"]),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "train_images_per_s": speed.images_per_s if speed is not None else None,
        "device": device_name(cfg.trainer.accelerator),
        "precision": str(trainer.precision),
        "overrides": overrides,
        "task_name": cfg.get("task_name", "train"),
        **values,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    results = run_entry(run, cfg)
    metric = cfg.get("optimized_metric")
    return results.get(metric.replace("/", "_")) if metric else results.get("val_acc")


def main() -> float | None:
    check_keys(sys.argv[1:], "train")
    return _main()


if __name__ == "__main__":
    main()
