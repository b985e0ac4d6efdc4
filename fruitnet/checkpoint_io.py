"""The Lightning plugin that writes checkpoints atomically. Apart from `fruitnet.checkpoints`
(reading), which predict and export import without loading Lightning."""

from __future__ import annotations

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from fruitnet.checkpoints import CheckpointError, load_checkpoint
from fruitnet.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    Lightning writes the final path directly, so a full disk or a kill mid-write would leave a
    truncated `last.ckpt` where the previous good one was. A failed write here raises
    CheckpointError naming the path and leaves the previous file untouched.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as err:
            raise CheckpointError(
                f"could not write checkpoint {path}: {err.strerror or err}. "
                "The previous checkpoint (if any) is intact; free disk space or make the run "
                "directory writable, then resume with ckpt_path=last."
            ) from err

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path, map_location=map_location or "cpu")
