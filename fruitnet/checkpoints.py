"""Checkpoint files: safe loading (weights_only), which file ``ckpt_path=last`` means, and the
classifier rebuilt from a checkpoint alone: the plain network (`load_network`, for predict, export
and Grad-CAM) or the LightningModule (`load_classifier`, for eval).

Nothing here imports Lightning at module level: predict and export read checkpoints through this
module, and loading Lightning costs them 5 s of a 12 s start on a 2-core CPU. The Lightning
plugin that writes checkpoints atomically is `fruitnet.checkpoint_io.AtomicCheckpointIO`.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fruitnet.models import create_model
from fruitnet.models.weights import keep_metadata

if TYPE_CHECKING:
    from fruitnet.module import ClassifierModule

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or written; the message names the file."""


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


class Classifier(nn.Module):
    """A checkpoint's trained network without Lightning: ``net`` (built by the model registry)
    and ``hparams`` (the checkpoint's primitive hyper-parameters, a dict).

    ``forward`` takes normalised float batches, like `ClassifierModule.forward`, in the same
    memory format, so both give the same numbers; Grad-CAM (`fruitnet.explain`) takes either.
    ``threshold``: the checkpoint's cut on P(class 1) for two classes (`decision_threshold`),
    None for argmax.
    """

    def __init__(
        self, net: nn.Module, hparams: dict[str, Any], threshold: float | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.hparams = dict(hparams)
        self.threshold = threshold
        channels_last = self.hparams.get("channels_last", True)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))


def decision_threshold(ckpt: dict[str, Any]) -> float | None:
    """A two-class checkpoint's cut on P(class 1): the ``decision_threshold`` the training run
    saved (``model.threshold``, chosen on validation when ``auto``), else a number in its
    hparams; None (argmax) for other checkpoints and for those written before the key existed."""
    hparams = ckpt.get("hyper_parameters") or {}
    if int(hparams.get("num_classes") or 0) != 2:
        return None
    value = ckpt.get("decision_threshold")
    if value is None and isinstance(hparams.get("threshold"), int | float):
        value = hparams["threshold"]
    return float(value) if value is not None else None


def decide(probs: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Predicted classes of ``N x classes`` probabilities: class 1 when P(1) > threshold (two
    classes and a threshold), else the argmax (0.5 gives the argmax's calls)."""
    if threshold is None or probs.shape[-1] != 2:
        return probs.argmax(-1)
    return (probs[..., 1] > threshold).long()


def _hparams_and_state(ckpt: dict[str, Any], path: str | Path) -> tuple[dict, dict]:
    hparams = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a fruitnet checkpoint (no 'hyper_parameters'/'state_dict'; "
            f"keys: {sorted(ckpt)[:8]})"
        )
    if not hparams.get("preprocess"):
        raise CheckpointError(f"{path} has no hparams.preprocess; cannot know its input pipeline")
    return hparams, state


def untrained_network(hparams: dict[str, Any]) -> nn.Module:
    """The network a checkpoint's hparams describe, through the model registry, with fresh
    weights (no pretrained download): what its state_dict fills, or what a benchmark times."""
    return create_model(
        hparams["model_name"],
        num_classes=int(hparams["num_classes"]),
        input_size=int(hparams["input_size"]),
        **(hparams.get("model_kwargs") or {}),
    )


def network_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Classifier:
    """The plain network of a checkpoint dict, from its hparams through the model registry, with
    the ``net.*`` weights of its state_dict; in eval mode."""
    hparams, state = _hparams_and_state(ckpt, path)
    try:
        # The state_dict below sets every weight.
        net = untrained_network(hparams)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the model of {path}: {err}") from err
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    weights = keep_metadata(weights, state, "net.")  # module versions (torchvision's MNASNet)
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model: {err}") from err
    return Classifier(net, hparams, decision_threshold(ckpt)).eval()


def load_network(path: str | Path) -> Classifier:
    """Checkpoint file -> `Classifier` (weights_only=True load; errors name the file)."""
    return network_from_checkpoint(load_checkpoint(path), path)


def classifier_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> ClassifierModule:
    """A ClassifierModule rebuilt from a checkpoint dict (see `load_classifier`), in eval mode."""
    from fruitnet.module import ClassifierModule  # Lightning: only for eval, not predict/export

    hparams, state = _hparams_and_state(ckpt, path)
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
    if module.binary:
        module.threshold = decision_threshold(ckpt)
    return module.eval()


def load_classifier(path: str | Path) -> ClassifierModule:
    """Checkpoint file -> ClassifierModule (weights_only=True load; errors name the file)."""
    return classifier_from_checkpoint(load_checkpoint(path), path)


def class_names_of(module: nn.Module) -> list[str]:
    """The class names of a `Classifier` or `ClassifierModule` (by index when it has none)."""
    names = module.hparams.get("class_names")
    if names:  # in NFC, as the scan names classes (older checkpoints may hold macOS's NFD)
        return [unicodedata.normalize("NFC", str(name)) for name in names]
    log.warning("checkpoint has no class_names; naming classes by index")
    return [str(i) for i in range(int(module.hparams["num_classes"]))]
