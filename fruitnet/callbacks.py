"""fruitnet's own Lightning callbacks: model size/cost, finite-loss guard, training throughput,
random-state checkpointing, and a ModelCheckpoint whose periodic saves work in the first epoch.

Lightning has no callback for any of these three (ModelSummary prints params but neither FLOPs at
the run's input size, latency nor checkpoint size; EarlyStopping's check_finite only looks at the
monitored metric at validation time, after the weights are already NaN).
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

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


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, except that `every_n_train_steps` only refreshes last.ckpt (the
    resume point), from the first step on, while the monitored top-k is ranked at validation only.

    Lightning's own `every_n_train_steps` (2.6) defers every periodic save, last.ckpt included,
    until the monitored metric exists, so the whole first epoch gets no checkpoint (a SIGKILL or a
    NaN there loses everything); later it ranks mid-epoch weights by the previous validation's
    score, which they never had, and it stops the top-k save at validation end altogether.
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_every_n_train_steps = int(every_n_train_steps or 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        if n < 1 or not self.save_last or trainer.global_step % n != 0:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        saved_step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        # A validation right after this step must still rank the top-k (Lightning skips every
        # save at a step that already has one).
        self._last_global_step_saved = saved_step


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


def _newest_checkpoint(trainer: L.Trainer) -> str:
    """Newest file any checkpoint callback wrote (a periodic one may not be the first callback)."""
    paths = {
        path
        for cb in trainer.checkpoint_callbacks
        for path in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", ""))
        if path and os.path.isfile(path)
    }
    return max(paths, key=lambda p: os.stat(p).st_mtime_ns) if paths else ""


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
        last_good = _newest_checkpoint(trainer)
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


class RNGStateCheckpoint(L.Callback):
    """Saves the global random states (torch, CUDA, numpy, Python) in every checkpoint and puts
    them back when a run resumes, so dropout masks and augmentations after a resume are the ones
    an uninterrupted run draws (Lightning checkpoints no random state).

    The states are applied in `on_train_start`, the last hook before the first resumed batch on
    both a mid-epoch and an epoch-end resume (`on_train_epoch_start` is skipped mid-epoch).
    Everything is stored as tensors, ints and lists, so `weights_only=True` loading accepts it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, py_state, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": {
                "kind": str(kind),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        if "numpy" in state:
            n = state["numpy"]
            keys = n["keys"].numpy().astype(np.uint32)
            np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
        if "python" in state:
            p = state["python"]
            random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        log.info("restored the random number generator states of the checkpoint")
