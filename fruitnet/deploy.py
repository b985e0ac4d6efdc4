"""The deployed form of a network, shared by `python -m fruitnet.export` and the search's latency
timing (`fruitnet.search.runtimes`): the module that is exported (uint8 images in, normalisation
inside), the one ONNX exporter call, and the ONNX Runtime session both run it in. One home, so
that the search times a net exactly as the export ships it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from fruitnet.data.transforms import BatchTransform

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs")


class ExportModel(nn.Module):
    """What gets exported: uint8 images in, ``(logits, probs)`` out, normalisation included.

    Baking the normalisation in leaves the consumer one step (decode + resize/crop to uint8)
    instead of two, and mean/std cannot drift from what the network was trained with.
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.transform = BatchTransform(mean, std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(self.transform(images))
        return logits, logits.softmax(-1)


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    target: str | Path | IO[bytes],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = 17,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> None:
    """``module`` (eval mode) to ONNX at ``target`` (a path or a binary buffer)."""
    with warnings.catch_warnings():
        # dynamo=False: the torch.export-based exporter needs onnxscript, which the [onnx] extra
        # does not install; the TorchScript-based one needs nothing more and handles these
        # networks. Its deprecation notice is not something a user of fruitnet can act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(
            module,
            (example,),
            str(target) if isinstance(target, str | Path) else target,
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
        )


def ort_session(model: str | Path | bytes) -> Any:
    """An ONNX Runtime CPU session with PyTorch's intra-op thread count, so that a latency
    compared with PyTorch's is like for like; all graph optimisations on (BatchNorm folded into
    the convs, activations fused), as a deployment would run it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
