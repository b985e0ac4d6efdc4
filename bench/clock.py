"""Wall-clock timeline of a `fruitnet.train` run, for the bench's end-to-end table.

The bench adds it to the default command as one Hydra override,
``+callbacks.bench_clock._target_=clock.EpochClock +callbacks.bench_clock.out=PATH`` (with
``bench/`` on ``PYTHONPATH``), and reads the JSON it writes at fit end. Times are
``time.time()`` (seconds since the epoch), so the parent process can subtract the moment it
started the command: time to first step includes the interpreter start, imports, Hydra,
the data scan (and cache build), model building and the first step itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


class EpochClock(L.Callback):
    """Records fit start, the end of the first training step, and each epoch's start, end of
    training batches, and end (after validation and its checkpoint), then writes them to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.t: dict = {"epochs": []}

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
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
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.t))
