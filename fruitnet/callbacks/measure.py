"""What a run measures about itself: model size and cost, training throughput, the wall-clock
timeline the benchmark reads, and the test loop's outputs that eval's figures are drawn from.

Lightning has no callback for these (ModelSummary prints params but neither FLOPs at the run's
input size, latency nor checkpoint size).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from fruitnet.callbacks.progress import in_fit_validation
from fruitnet.files import write_json
from fruitnet.models import profile
from fruitnet.timing import sync

log = logging.getLogger(__name__)


def _autocast_dtype(trainer: L.Trainer) -> torch.dtype | None:
    precision = str(trainer.precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


class ModelSizeCallback(L.Callback):
    """At fit start: params, fp32 MiB, weights-file MiB and FLOPs at the run's input size; at train
    end: latency (ms per image at batch 1 and at the training batch size, on the run's device and
    precision).

    The numbers go to the loggers (`model/*`) and to `self.stats`, which results.json reads.
    Latency is timed after training, not before it: timing 7 forward passes at the training batch
    size took 1-3 s (basic CNN) to ~10 s (ResNet-50) on a 2-core CPU before the first step, and
    after training the kernels are warm, closer to a deployed model's speed.
    """

    def __init__(self, *, latency: bool = True, warmup: int = 2, iters: int = 5) -> None:
        self.latency = latency
        self.warmup = warmup
        self.iters = iters
        self.stats: dict[str, Any] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        net = pl_module.net
        size = int(pl_module.hparams.input_size)
        total, trainable = profile.count_params(net)
        stats: dict[str, Any] = {
            "params": total,
            "trainable_params": trainable,
            "fp32_mib": profile.fp32_mib(net),
            "weights_mb": profile.state_dict_mib(net),
            "flops": profile.flops(net, size),
            "input_size": size,
        }
        self.stats = stats
        self._log(trainer, stats)
        log.info(
            "model %s: %s params, %.2f MiB fp32, %.2f GFLOPs at %dx%d",
            pl_module.hparams.model_name,
            f"{total:,}",
            stats["fp32_mib"],
            stats["flops"] / 1e9,
            size,
            size,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.latency or not trainer.is_global_zero:
            return
        net = pl_module.net
        size = int(pl_module.hparams.input_size)
        batch = int(getattr(trainer.datamodule, "batch_size", 1) or 1)
        common = dict(
            device=pl_module.device,
            warmup=self.warmup,
            iters=self.iters,
            channels_last=pl_module.memory_format == torch.channels_last,
            autocast_dtype=_autocast_dtype(trainer),
        )
        latency = {
            "latency_ms_b1": profile.latency_ms(net, size, 1, **common),
            "latency_batch": batch,
            "latency_ms_batch": profile.latency_ms(net, size, batch, **common),
        }
        self.stats.update(latency)
        self._log(trainer, latency)

    @staticmethod
    def _log(trainer: L.Trainer, stats: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"model/{k}": float(v) for k, v in stats.items() if k != "latency_batch"}, step=0
            )


class TrainThroughput(L.Callback):
    """Training images per second of training-loop wall time (validation excluded), over the
    epochs after the first when there are several (the first pays for warm-up and compilation)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, float]] = []  # (images, seconds) per epoch
        self._images = 0
        self._start = 0.0
        self._val_time = 0.0
        self._val_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self._images, self._val_time, self._start = 0, 0.0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        if in_fit_validation(trainer):
            sync(pl_module.device)
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if in_fit_validation(trainer):
            sync(pl_module.device)
            self._val_time += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        seconds = time.perf_counter() - self._start - self._val_time
        self.epochs.append((self._images * trainer.world_size, seconds))

    @property
    def images_per_s(self) -> float | None:
        epochs = self.epochs[1:] if len(self.epochs) > 1 else self.epochs
        images = sum(n for n, _ in epochs)
        seconds = sum(s for _, s in epochs)
        return images / seconds if seconds > 0 else None


class KeepTestOutputs(L.Callback):
    """Keeps the logits and labels of the test loop. `test_step` computes the logits but returns
    nothing, so a forward hook on the module picks them up: no second pass over the test set."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None
        self._hook = pl_module.register_forward_hook(self._keep)

    def _keep(self, module, args, output: torch.Tensor) -> None:
        self._last = output.detach().float().cpu()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.logits.append(self._last)
        self.labels.append(batch[1].detach().cpu())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()


class EpochClock(L.Callback):
    """The wall-clock timeline of a run, for the bench's end-to-end table (`bench/bench.py` adds it
    as ``+callbacks.bench_clock._target_=fruitnet.callbacks.EpochClock
    +callbacks.bench_clock.out=PATH``). Times are ``time.time()``, so the parent process can
    subtract the moment it started the command: time to first step then includes the interpreter
    start, imports, Hydra, the data scan, model building and the first step itself.

    Records fit start, the end of the first training step, and each epoch's start, end of
    training batches, and end (after validation and its checkpoint), then writes them to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.t: dict = {"epochs": []}

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        sync(pl_module.device)
        return time.time()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.t["fit_start"] = self._now(pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t["epochs"].append({"start": self._now(pl_module), "images": 0})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = self.t["epochs"][-1]
        epoch["images"] += len(batch[1])
        if "first_step" not in self.t:
            self.t["first_step"] = self._now(pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self.t["epochs"]:
            self.t["epochs"][-1].setdefault("train_end", self._now(pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = self.t["epochs"][-1]
        epoch.setdefault("train_end", self._now(pl_module))
        epoch["end"] = self._now(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        # Checkpoints of the last epoch are written by now (ModelCheckpoint saves at validation
        # end / train epoch end), so fit_end closes the last epoch's wall time.
        self.t["fit_end"] = self._now(pl_module)
        write_json(self.out, self.t, indent=None)
