"""Test-time BatchNorm adaptation: a network's BatchNorm statistics re-estimated on the images it
is about to classify (AdaBN, Li et al. 2016; prediction-time BN, Nado et al. 2020).

Why: images from another scanner, site or camera than the training images shift every layer's
activations, and BatchNorm's running statistics, fixed at training, then move the outputs. On the
chest X-rays (bench/CHEST_BN_SHIFT.md) the BatchNorm nets call 28-51 % of the NORMAL test films
PNEUMONIA as trained, and 11-24 % once the statistics are those of the unlabelled test films;
their ranking (AUROC) barely moves. It reads the images, never their labels, but it is still
transductive: the numbers it gives hold for that set of images, which must be large enough to
estimate each channel's mean and variance (tens of images, not one). Nets without BatchNorm
(the basic CNN) have nothing to adapt.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class NoBatchNormError(ValueError):
    """adapt_bn=true on a network without BatchNorm layers."""


def batchnorm_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running statistics of ``model`` by those of ``batches``
    (normalised float inputs, as ``model`` takes them): a plain average of the batches' statistics
    (momentum None, as torch's `update_bn`); ``model``'s modes are restored. Returns the number of
    images read."""
    layers = batchnorm_layers(model)
    if not layers:
        raise NoBatchNormError(
            "adapt_bn=true: this network has no BatchNorm layers, so there are no statistics to "
            "adapt (the basic CNN has none); leave adapt_bn=false"
        )
    saved = [({k: v.clone() for k, v in m.state_dict().items()}, m.momentum) for m in layers]
    modes = {m: m.training for m in model.modules()}
    # Not torch's update_bn: it puts the whole net in train mode, so dropout and stochastic
    # depth (EfficientNet) would drop units while the statistics are taken, and each call would
    # give other statistics. Only the BatchNorm layers train here.
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    with torch.no_grad():
        for x in batches:
            model(x)
            seen += len(x)
    for m, (state, momentum) in zip(layers, saved, strict=True):
        m.momentum = momentum
        if seen < 2:
            m.load_state_dict(state)  # as it was: one image has no variance to estimate
    for m, training in modes.items():
        m.train(training)
    if seen < 2:
        raise ValueError(
            f"adapt_bn=true needs at least 2 images to estimate statistics, got {seen}"
        )
    return seen
