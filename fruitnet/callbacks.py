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
import sys
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.callbacks import ProgressBar

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

    # Lightning 2.6 refreshes last.ckpt at an epoch's end only when a top-k checkpoint was saved
    # at the same step: after an epoch that did not improve val/acc, last.ckpt (the resume point
    # of ckpt_path=last, e.g. the study's stage 2) would still hold an older epoch. Both hooks
    # below save it anyway, at whichever of the two Lightning saves at.

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer) -> None:
        # Skipped when this step already has a save (last.ckpt came with the new top-k)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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


def _fit_validation(trainer: L.Trainer) -> bool:
    """A validation inside fit (not the sanity check). ``trainer.training`` is False there:
    Lightning sets the stage to validating for the loop's duration."""
    return trainer.state.fn == "fit" and not trainer.sanity_checking


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
        if _fit_validation(trainer):
            self._sync(pl_module)
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if _fit_validation(trainer):
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


class EpochLineProgress(ProgressBar):
    """The progress "bar" for logs: one line per training epoch, through the `fruitnet.progress`
    logger (console and the run's log file), e.g.

        epoch 3/10: train loss 1.2345, val acc 0.8421, 812 img/s, 5.1 s

    img/s counts training images over the training batches' wall time (validation excluded);
    seconds is the whole epoch, validation and checkpoints included. As Lightning's progress-bar
    callback it replaces the default bar, so a log file gets no bar redraws. The epoch loss is
    summed on the device and read once per epoch (no per-step host sync).
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = self._train_end = 0.0
        self._images = 0
        self._loss_sum: torch.Tensor | None = None
        self._batches = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._train_end = time.perf_counter(), 0.0
        self._images, self._batches, self._loss_sum = 0, 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1]) if isinstance(batch, (tuple, list)) else len(batch)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._batches += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        if _fit_validation(trainer) and not self._train_end:
            self._train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        now = time.perf_counter()
        train_s = (self._train_end or now) - self._start
        parts = []
        if self._loss_sum is not None and self._batches:
            parts.append(f"train loss {float(self._loss_sum) / self._batches:.4f}")
        val = trainer.callback_metrics.get("val/acc") if self._train_end else None
        parts.append(f"val acc {float(val):.4f}" if val is not None else "val acc -")
        rate = self._images * trainer.world_size / train_s if train_s > 0 else 0.0
        parts += [f"{rate:.0f} img/s", f"{now - self._start:.1f} s"]
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        progress_log.info("epoch %d/%s: %s", trainer.current_epoch + 1, epochs, ", ".join(parts))


progress_log = logging.getLogger("fruitnet.progress")


def progress_bar(**rich_kwargs: Any) -> ProgressBar:
    """The progress callback for where stdout goes: Lightning's `RichProgressBar` (with
    ``rich_kwargs``) in a terminal, `EpochLineProgress` when stdout is a file or a pipe."""
    stream = sys.stdout
    if stream is not None and hasattr(stream, "isatty") and stream.isatty():
        from fruitnet.console import CompactRichProgressBar  # metrics that fit 80 columns

        return CompactRichProgressBar(**rich_kwargs)
    return EpochLineProgress()
