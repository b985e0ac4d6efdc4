"""Test-time BatchNorm adaptation: a network's BatchNorm statistics re-estimated on the images it
is about to classify (AdaBN, Li et al. 2016; prediction-time BN, Nado et al. 2020).

Why: images from another scanner, site or camera than the training images shift every layer's
activations, and BatchNorm's running statistics, fixed at training, then move the outputs. On the
chest X-rays (bench/CHEST_BN_SHIFT.md) the BatchNorm nets call 28-51 % of the NORMAL test films
PNEUMONIA as trained, and 11-25 % once the statistics are those of the unlabelled test films;
their ranking (AUROC) barely moves. It reads the images, never their labels, but it is still
transductive: the numbers it gives hold for that set of images, which must be large enough to
estimate each channel's mean and variance (tens of images, not one). Nets without BatchNorm
(the basic CNN) have nothing to adapt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


class NoBatchNormError(ValueError):
    """adapt_bn=true on a network without BatchNorm layers."""


def batchnorm_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running statistics of ``model`` by those of ``batches``
    (normalised float inputs, as ``model`` takes them): torch's `update_bn`, a plain average over
    all batches; ``model``'s train/eval mode is restored. Returns the number of images read."""
    layers = batchnorm_layers(model)
    if not layers:
        raise NoBatchNormError(
            "adapt_bn=true: this network has no BatchNorm layers, so there are no statistics to "
            "adapt (the basic CNN has none); leave adapt_bn=false"
        )
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    seen = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal seen
        for x in batches:
            seen += len(x)
            yield x

    with torch.no_grad():
        update_bn(counted(), model)
    if seen < 2:
        for m, state in zip(layers, saved, strict=True):
            m.load_state_dict(state)  # as it was: one image has no variance to estimate
        raise ValueError(
            f"adapt_bn=true needs at least 2 images to estimate statistics, got {seen}"
        )
    return seen
