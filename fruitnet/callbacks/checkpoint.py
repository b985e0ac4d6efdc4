"""Checkpointing callbacks: the resume point (last.ckpt from the first step on), a checkpoint when
the run is interrupted, and the random states that make a resumed run draw what an uninterrupted
one would."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

log = logging.getLogger(__name__)


class ResumableCheckpoint(ModelCheckpoint):
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

    @property
    def state_key(self) -> str:
        # The key Lightning files this callback's state under in a checkpoint. Lightning derives it
        # from the class name; fruitnet's class was called ModelCheckpoint before, so the old key
        # is kept and a resume from an older checkpoint still restores best/last paths and scores.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

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


class InterruptCheckpoint(Checkpoint):
    """Saves a full checkpoint (``dirpath/filename.ckpt``) when the run is interrupted: Ctrl-C,
    SIGTERM, an exception. A finished run removes it; ``ckpt_path=last`` resumes from it.

    Lightning's own `OnExceptionCheckpoint` does the same, but its presence also turns every
    ``trainer.fit(ckpt_path=None)`` into ``ckpt_path="last"``: a fresh run warned "was called
    without a model" and would silently resume whatever an earlier run left in a reused run
    directory. fruitnet decides what to resume (`resolve_ckpt_path`), so this one is a plain
    `Checkpoint`. It also gives `Trainer.save_checkpoint` its ``weights_only`` flag (False: save
    optimizer, loops and callbacks too, the checkpoint is a resume point; that flag chooses what
    to save, nothing is loaded), which Lightning's leaves unset and then logs about.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer, *args: Any, **kwargs: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)

    def teardown(self, trainer, *args: Any, **kwargs: Any) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)


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
