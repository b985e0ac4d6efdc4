"""Checkpoint files: safe loading (weights_only), atomic saving, which file ``ckpt_path=last``
means, and the classifier rebuilt from a checkpoint alone (eval, predict, export)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from fruitnet.files import atomic_path
from fruitnet.module import ClassifierModule

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or written; the message names the file."""


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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True: pickled code in an untrusted file is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = (
                "it contains pickled Python objects, which fruitnet refuses to execute "
                f"(weights_only=True): {reason}"
            )
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def newest_checkpoint(directory: Path) -> Path | None:
    files = [p for p in Path(directory).glob("*.ckpt") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, runs_dir: Path | None) -> str | None:
    """`ckpt_path=last`: newest checkpoint of this run dir, else (when runs_dir is given) of the
    newest earlier run under runs_dir."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path != "last":
        load_checkpoint(ckpt_path)  # fail early, naming the file
        return str(ckpt_path)
    own = newest_checkpoint(Path(output_dir) / "checkpoints")
    if own is not None:
        return str(own)
    if runs_dir is None:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint in {Path(output_dir) / 'checkpoints'}"
        )
    candidates = [
        c
        for d in Path(runs_dir).glob("*/checkpoints")
        if d.parent != Path(output_dir) and (c := newest_checkpoint(d)) is not None
    ]
    if not candidates:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint in {Path(output_dir) / 'checkpoints'} "
            f"nor in any run under {runs_dir}"
        )
    return str(max(candidates, key=lambda p: p.stat().st_mtime_ns))


def classifier_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> ClassifierModule:
    """A ClassifierModule rebuilt from a checkpoint dict (see `load_classifier`), in eval mode."""
    hparams = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a fruitnet checkpoint (no 'hyper_parameters'/'state_dict'; "
            f"keys: {sorted(ckpt)[:8]})"
        )
    # No pretrained download and no weights file: the state_dict below overwrites every weight.
    # compile=False: inference and export want the plain network.
    hparams = {**hparams, "pretrained": False, "weights": None, "compile": False}
    try:
        module = ClassifierModule(**hparams)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the model of {path}: {err}") from err
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model: {err}") from err
    if not module.hparams.get("preprocess"):
        raise CheckpointError(f"{path} has no hparams.preprocess; cannot know its input pipeline")
    return module.eval()


def load_classifier(path: str | Path) -> ClassifierModule:
    """Checkpoint file -> ClassifierModule (weights_only=True load; errors name the file)."""
    return classifier_from_checkpoint(load_checkpoint(path), path)


def class_names_of(module: ClassifierModule) -> list[str]:
    names = module.hparams.get("class_names")
    if names:
        return list(names)
    log.warning("checkpoint has no class_names; naming classes by index")
    return [str(i) for i in range(int(module.hparams.num_classes))]
