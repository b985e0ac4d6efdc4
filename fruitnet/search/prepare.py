"""What a search run prepares before its first step, beyond what `fruitnet.assemble` builds: the
latency table, timed on the device the run trains on, and the held-out loader of the
architecture steps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from fruitnet.data.loading import BatchedDataset, EpochSampler, collate_batch
from fruitnet.runtime import uses_cuda
from fruitnet.search.calibration import calibrate
from fruitnet.search.latency import LatencyTable, build_latency_table, check_target
from fruitnet.search.runtimes import runtime_device
from fruitnet.search.space import SearchConfigError, SearchSpace
from fruitnet.search.supernet import SuperNet

log = logging.getLogger("fruitnet.search")


def latency_device(cfg: DictConfig) -> torch.device:
    """The device the run trains on, which is the one the latency table is timed on."""
    if uses_cuda(cfg.trainer.accelerator) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def run_latency_table(
    cfg: DictConfig,
    search_cfg: dict[str, Any],
    space: SearchSpace,
    dm: Any,
    targets: list[float] | None = None,
) -> LatencyTable:
    """The table of ``space`` for the data's class count and input size, in ``search.runtime``,
    calibrated on whole nets unless ``search.latency_calibrate`` is false; a target it cannot
    reach fails here."""
    channels_last = bool(cfg.model.get("channels_last", True))
    probe = SuperNet(space, num_classes=dm.num_classes, input_size=dm.input_size)
    runtime = str(search_cfg.get("runtime", "torch"))
    timing = {
        "device": runtime_device(runtime, latency_device(cfg)),
        "channels_last": channels_last,
        "warmup": int(search_cfg.get("latency_warmup", 5)),
        "repeats": int(search_cfg.get("latency_repeats", 30)),
        "rounds": int(search_cfg.get("latency_rounds", 3)),
        "cache_dir": Path(cfg.paths.cache_dir) / "latency",
    }
    batch = int(search_cfg.get("latency_batch", 1))
    table = build_latency_table(probe, runtime=runtime, batch=batch, **timing)
    if search_cfg.get("latency_calibrate", True):
        nets = dict(n_random=int(search_cfg.get("latency_fit_nets", 6)))
        nets["n_check"] = int(search_cfg.get("latency_check_nets", 2))
        table = calibrate(table, probe, preprocess=dm.preprocess, **nets, **timing)
    targets = targets or [float(search_cfg["target_latency_ms"])]
    key = "search.targets" if search_cfg.get("targets") else "search.target_latency_ms"
    for t in targets:
        check_target(table, t, str(search_cfg.get("latency_loss", "mul_log")), key=key)
    log.info(
        "search space: %d mixed edges; latency %.3f .. %.3f ms per batch of %d in %s on %s; "
        "target(s) %s ms",
        sum(space.depths),
        table.min_ms(),
        table.max_ms(),
        table.meta["batch"],
        runtime,
        table.meta["device"],
        ", ".join(f"{t:g}" for t in targets),
    )
    return table


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


def heldout_batches(module: Any, dm: Any, max_images: int) -> list[Any]:
    """The first ``max_images`` held-out images as device batches, never augmented: what the
    per-target selection scores paths on (fixed, so every path sees the same images)."""
    return _device_batches(module, dm, dm.val_set, range(min(int(max_images), len(dm.val_set))))


def calibration_batches(module: Any, dm: Any, max_images: int, seed: int) -> list[Any]:
    """``max_images`` training images drawn at random (the split is stored class by class) as
    device batches: what each path the selection scores recomputes its BatchNorm statistics on."""
    order = torch.randperm(len(dm.train_set), generator=torch.Generator().manual_seed(seed))
    return _device_batches(module, dm, dm.train_set, order[: max(0, int(max_images))].tolist())


def _device_batches(module: Any, dm: Any, dataset: Any, indices: Any) -> list[Any]:
    indices = list(indices)
    if not indices:
        return []
    loader = DataLoader(
        BatchedDataset(dataset),
        batch_size=max(1, min(int(dm.batch_size), len(indices))),
        sampler=indices,
        collate_fn=collate_batch,
        num_workers=0,
    )
    return [held_out_to_device(module, batch) for batch in loader]


def held_out_to_device(module: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` on the module's device, transformed as evaluation transforms them,
    whatever the trainer's stage. The architecture steps and the per-target choice measure the
    held-out split, so it is never augmented (as in the paper, whose architecture steps read
    validation images transformed as for the test); moved through the trainer, they would take
    the training augmentation (`data.augment`) during fit. The BatchNorm recomputation's training
    images get the same inputs the held-out scores are then taken on."""
    images, labels = move_data_to_device(batch, module.trainer.strategy.root_device)
    return module.trainer.datamodule.batch_transform(images, train=False), labels
