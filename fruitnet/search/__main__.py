"""`python -m fruitnet.search`: ProxylessNAS-style search on your data, timed on your device.

    python -m fruitnet.search data=fruits data.root=/path/to/fruits-360 search.target_latency_ms=4
    python -m fruitnet.search ckpt_path=last                 # resume a killed search
    python -m fruitnet.train model=proxyless model.arch=logs/search/runs/<run>/arch.json

Same datamodule, trainer, precision, callbacks, checkpointing and resume as `fruitnet.train` (its
helpers are reused). The run directory gets ``arch.json`` (official net-config format),
``search_report.md``, ``edge_probs.png`` and ``results.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from fruitnet.callbacks import RNGStateCheckpoint
from fruitnet.config import CONFIG_PATH, instantiate_group, run_entry, to_primitive
from fruitnet.data.datamodule import BatchedDataset, EpochSampler, collate_batch
from fruitnet.runtime import device_name, uses_cuda
from fruitnet.search.latency import build_latency_table, calibrate, check_target
from fruitnet.search.module import SearchModule
from fruitnet.search.report import write_outputs
from fruitnet.search.supernet import SearchConfigError, SearchSpace, SuperNet
from fruitnet.train import _find, build_trainer, hydra_choices, start_run

log = logging.getLogger("fruitnet.search")


def latency_device(cfg: DictConfig) -> torch.device:
    """The device the run trains on, which is the one the latency table is timed on."""
    if uses_cuda(cfg.trainer.accelerator) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def arch_loader(dm: Any, seed: int) -> DataLoader:
    """Batches of the held-out split for the architecture steps, reshuffled every pass."""
    if dm.val_set is None or len(dm.val_set) == 0:
        raise SearchConfigError(
            "the architecture steps need a held-out split: set data.val_fraction > 0 "
            "(it is carved from the training split; the test split is never used)"
        )
    batch = min(int(dm.batch_size), len(dm.val_set))
    return DataLoader(
        BatchedDataset(dm.val_set),
        batch_size=batch,
        sampler=EpochSampler(len(dm.val_set), seed + 7919),
        collate_fn=collate_batch,
        num_workers=0,
        drop_last=len(dm.val_set) > batch,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    output_dir, ckpt_path = start_run(cfg)
    search_cfg = to_primitive(cfg.search)
    space = SearchSpace.from_config(search_cfg)  # bad op names etc. fail here, before the data

    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    channels_last = bool(cfg.model.get("channels_last", True))
    probe = SuperNet(space, num_classes=dm.num_classes, input_size=dm.input_size)
    device = latency_device(cfg)
    t0 = time.perf_counter()
    table = build_latency_table(
        probe,
        device=device,
        batch=int(search_cfg.get("latency_batch", 1)),
        channels_last=channels_last,
        warmup=int(search_cfg.get("latency_warmup", 5)),
        repeats=int(search_cfg.get("latency_repeats", 30)),
        rounds=int(search_cfg.get("latency_rounds", 3)),
        cache_dir=Path(cfg.paths.cache_dir) / "latency",
    )
    if search_cfg.get("latency_calibrate", True):
        table = calibrate(
            table,
            probe,
            device=device,
            channels_last=channels_last,
            warmup=int(search_cfg.get("latency_warmup", 5)),
            repeats=int(search_cfg.get("latency_repeats", 30)),
            rounds=int(search_cfg.get("latency_rounds", 3)),
            cache_dir=Path(cfg.paths.cache_dir) / "latency",
        )
    lut_s = time.perf_counter() - t0
    del probe
    target = float(search_cfg["target_latency_ms"])
    check_target(table, target, str(search_cfg.get("latency_loss", "mul_log")))
    log.info(
        "search space: %d mixed edges; latency %.3f .. %.3f ms per batch of %d on %s; target %g ms",
        sum(space.depths),
        table.min_ms(),
        table.max_ms(),
        table.meta["batch"],
        table.meta["device"],
        target,
    )

    module = SearchModule(
        num_classes=dm.num_classes,
        input_size=dm.input_size,
        space=search_cfg,
        search=search_cfg,
        latency_table=table.to_dict(),
        channels_last=channels_last,
        preprocess=dm.preprocess,
        class_names=list(dm.class_names),
    )
    module.arch_loader = arch_loader(dm, int(cfg.seed))

    callbacks = instantiate_group(cfg.get("callbacks"))
    if _find(callbacks, RNGStateCheckpoint) is None:
        callbacks.append(RNGStateCheckpoint())
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    search_s = time.perf_counter() - started

    choices, overrides = hydra_choices()
    results: dict[str, Any] = {}
    if trainer.is_global_zero:
        results = write_outputs(
            module,
            output_dir,
            target_ms=target,
            search_cfg=search_cfg,
            extra={
                "task_name": cfg.get("task_name", "search"),
                "data": choices.get("data", "?"),
                "data_root": str(cfg.data.root),
                "num_classes": dm.num_classes,
                "input_size": dm.input_size,
                "train_images": dm.num_train,
                "heldout_images": dm.num_val,
                "batch_size": cfg.data.batch_size,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "lut_s": lut_s,
                "search_s": search_s,
                "device": device_name(cfg.trainer.accelerator),
                "precision": str(trainer.precision),
                "last_ckpt": trainer.checkpoint_callback.last_model_path
                if trainer.checkpoint_callback is not None
                else None,
                "resumed_from": ckpt_path,
                "run_dir": str(output_dir),
                "overrides": overrides,
            },
        )
        log.info(
            "searched arch: %s (predicted %.3f ms, measured %.3f ms, target %g ms); "
            "train it: python -m fruitnet.train model=proxyless model.arch=%s",
            " ".join(results["chosen"]),
            results["predicted_latency_ms"],
            results["measured_latency_ms"],
            target,
            results["arch_path"],
        )
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="search")
def main(cfg: DictConfig) -> float | None:
    results = run_entry(run, cfg)
    return results.get("val_acc")


if __name__ == "__main__":
    main()
