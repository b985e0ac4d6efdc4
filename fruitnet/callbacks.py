"""fruitnet's own Lightning callbacks: model size/cost, finite-loss guard, training throughput.

Lightning has no callback for any of these three (ModelSummary prints params but neither FLOPs at
the run's input size, latency nor checkpoint size; EarlyStopping's check_finite only looks at the
monitored metric at validation time, after the weights are already NaN).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch

from fruitnet.models import profile

log = logging.getLogger(__name__)


def _autocast_dtype(trainer: L.Trainer) -> torch.dtype | None:
    precision = str(trainer.precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


class ModelSizeCallback(L.Callback):
    """At fit start: params, fp32 MiB, weights-file MiB, FLOPs at the run's input size, and latency
    (ms per image at batch 1 and at the training batch size, on the run's device and precision).

    The numbers go to the loggers (`model/*`) and to `self.stats`, which results.json reads.
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
        if self.latency:
            batch = int(getattr(trainer.datamodule, "batch_size", 1) or 1)
            common = dict(
                device=pl_module.device,
                warmup=self.warmup,
                iters=self.iters,
                channels_last=pl_module.memory_format == torch.channels_last,
                autocast_dtype=_autocast_dtype(trainer),
            )
            stats["latency_ms_b1"] = profile.latency_ms(net, size, 1, **common)
            stats["latency_batch"] = batch
            stats["latency_ms_batch"] = profile.latency_ms(net, size, batch, **common)
        self.stats = stats
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"model/{k}": float(v) for k, v in stats.items() if k != "latency_batch"}, step=0
            )
        log.info(
            "model %s: %s params, %.2f MiB fp32, %.2f GFLOPs at %dx%d",
            pl_module.hparams.model_name,
            f"{total:,}",
            stats["fp32_mib"],
            stats["flops"] / 1e9,
            size,
            size,
        )


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


class FiniteLossGuard(L.Callback):
    """Stops the run before a NaN/inf loss reaches the weights.

    It checks in `on_before_backward`, so the optimizer never steps on a bad gradient and the last
    checkpoint stays good. The check costs one host sync per step, free on the CPU and small
    next to a training step on a GPU.
    """

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        ckpt = trainer.checkpoint_callback
        last_good = (ckpt.last_model_path or ckpt.best_model_path) if ckpt is not None else ""
        hint = (
            f"last good checkpoint: {last_good} (resume with ckpt_path={last_good} and a lower "
            "optimizer.lr, or gradient clipping via trainer.gradient_clip_val)"
            if last_good
            else "no checkpoint was saved yet"
        )
        raise NonFiniteLossError(
            f"training loss is {loss.detach().float().item()} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); stopping before the weights are updated; {hint}"
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

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._images, self._val_time, self._start = 0, 0.0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training:
            self._sync(pl_module)
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.training:
            self._sync(pl_module)
            self._val_time += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self._start - self._val_time
        self.epochs.append((self._images * trainer.world_size, seconds))

    @property
    def images_per_s(self) -> float | None:
        epochs = self.epochs[1:] if len(self.epochs) > 1 else self.epochs
        images = sum(n for n, _ in epochs)
        seconds = sum(s for _, s in epochs)
        return images / seconds if seconds > 0 else None
