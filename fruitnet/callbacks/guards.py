"""Stops a run before a NaN or inf loss reaches the weights."""

from __future__ import annotations

import os

import lightning as L
import torch


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
