"""What the torchvision and timm families share: reading a built network's classifier and the layer
Grad-CAM explains, the eval pipeline from a library's metadata, and the name checks.

The network is inspected on the ``meta`` device (shapes only, no memory, no init cost), so a
family resolves any architecture in a fraction of a second; a builder that cannot run on ``meta``
is inspected on the CPU instead.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

# A class count no hidden layer of a real network has: the modules whose first weight dimension
# equals it are the classifier.
PROBE_CLASSES = 7919
# The side the probe forward runs at: a usual ImageNet input, where every stage is still spatial.
PROBE_SIZE = 224
# A second side: a network that fails there takes one input size only (a ViT's patch grid).
PROBE_OTHER_SIZE = 160


@dataclass(frozen=True)
class NetFacts:
    head: str  # dotted name of the classifier module
    cam_layer: str | None  # the layer Grad-CAM explains (None: gradcam's own probe)
    fixed_size: bool  # the network refuses an input of another side than its native one


def unknown_arch(family: str, arch: object, names: Sequence[str]) -> ValueError:
    """One line: the bad name and the closest valid ones."""
    close = difflib.get_close_matches(str(arch), names, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return ValueError(
        f"unknown {family} architecture {arch!r}{hint} "
        f"(python -m fruitnet.models --list '*{str(arch)[:4]}*' lists them)"
    )


def require_arch(family: str, arch: object) -> str:
    if not arch or not isinstance(arch, str):
        raise ValueError(
            f"model={family} needs model.arch=<name>, e.g. model.arch="
            f"{'efficientnet_b0' if family == 'torchvision' else 'vit_tiny_patch16_224'} "
            f"(python -m fruitnet.models --list lists them)"
        )
    return arch


def inspect_net(build: Callable[..., nn.Module], native_size: int) -> NetFacts:
    """The classifier, the Grad-CAM layer and whether the input size is fixed, for the network
    ``build(num_classes=...)`` makes; on ``meta`` when the builder runs there, else on the CPU."""
    try:
        with torch.device("meta"):
            net = build(num_classes=PROBE_CLASSES)
        device = torch.device("meta")
    except Exception:  # an init that copies data (torchvision RegNet): inspect it on the CPU
        net, device = build(num_classes=PROBE_CLASSES), torch.device("cpu")
    heads = [
        name
        for name, m in net.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor)
        and m.weight.dim() >= 2
        and m.weight.shape[0] == PROBE_CLASSES
    ]
    if not heads:
        raise ValueError(f"{type(net).__name__}: found no classifier layer to resize")
    net.eval()
    cam = token_cam_layer(net) or _last_map_layer(net, device, native_size)
    return NetFacts(head=heads[-1], cam_layer=cam, fixed_size=not _runs_at(net, device))


def token_cam_layer(net: nn.Module) -> str | None:
    """A vision transformer's layer for Grad-CAM: the first norm of the last block, whose output
    still carries every patch token (after the last block only the class token reaches the head).
    Grad-CAM maps its tokens back onto the patch grid (`fruitnet.explain.gradcam`)."""
    blocks = getattr(net, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) and hasattr(blocks[-1], "norm1"):
        return f"blocks.{len(blocks) - 1}.norm1"  # timm ViT, DeiT, BEiT, EVA
    layers = getattr(getattr(net, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential) and len(layers) and hasattr(layers[-1], "ln_1"):
        return f"encoder.layers.{list(dict(layers.named_children()))[-1]}.ln_1"  # torchvision
    return None


def map_layout(shape: Sequence[int]) -> str | None:
    """``"nchw"`` or ``"nhwc"`` for a square spatial map of side > 1 (a Swin stage is NHWC);
    ``"tokens"`` for ``B x N x C``; None for anything else (pooled vectors, logits)."""
    if len(shape) == 3 and shape[1] > 1:
        return "tokens"
    if len(shape) != 4:
        return None
    if shape[2] == shape[3] > 1 and shape[1] != shape[2]:
        return "nchw"
    if shape[1] == shape[2] > 1 and shape[3] != shape[2]:
        return "nhwc"
    return None


def _last_map_layer(net: nn.Module, device: torch.device, size: int) -> str | None:
    """The last module, in the order modules finish, whose output is a spatial map: the last
    stage (``layer4``, ``features``), before global pooling."""
    finished: list[str] = []
    handles = []
    for name, module in net.named_modules():
        if not name:
            continue

        def hook(_m, _args, out, name=name) -> None:
            if isinstance(out, torch.Tensor) and map_layout(out.shape) in ("nchw", "nhwc"):
                finished.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size, device=device))
    except Exception as err:  # a net that cannot run the probe: gradcam probes the real one
        log.debug("cam probe of %s failed: %s", type(net).__name__, err)
        return None
    finally:
        for h in handles:
            h.remove()
    return finished[-1] if finished else None


def _runs_at(net: nn.Module, device: torch.device, size: int = PROBE_OTHER_SIZE) -> bool:
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size, device=device))
    except (RuntimeError, AssertionError, ValueError):
        return False
    return True


def runs_at(build: Callable[..., nn.Module], size: int) -> bool:
    """Whether the network takes a ``size`` px input (on ``meta``: shapes only); True when the
    builder cannot run on ``meta`` (then the real forward says it)."""
    try:
        with torch.device("meta"):
            net = build(num_classes=PROBE_CLASSES)
    except (NotImplementedError, RuntimeError):
        return True
    return _runs_at(net.eval(), torch.device("meta"), size)


def eval_resize(crop: int, crop_pct: float) -> int:
    """The shorter side before the centre crop, as timm computes it (``floor(crop / crop_pct)``)."""
    return int(math.floor(crop / crop_pct))
