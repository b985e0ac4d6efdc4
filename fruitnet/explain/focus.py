"""How much of a Grad-CAM map sits in the middle of the image: a measure of shortcut reliance.

A chest X-ray model that reads the lungs puts its evidence in the middle of the image; one that
reads the border, the corner marker (the "L"/"R" letter) or the text burnt into the film puts it
in the outer band. `central_share` is the fraction of a map's mass (its absolute value) inside the
central box of half the image's width and half its height (`CENTRE`: 25 % of the area):

- 1.0 when all the evidence is in the box, 0.0 when all of it is in the outer band;
- 0.25 for a uniform map, the share a model that looks everywhere alike gets: above it the
  evidence leans to the centre, below it to the border.

Why a box and not a lung mask: a mask needs a segmentation model or labelled masks (new data);
the box needs nothing. Why half the side: the lungs of a centred AP/PA chest film cover most of
the central half in both directions, while the markers, text and collimation edges of the Kermany
images sit in the outer quarter on each side, so the box separates the two for these images.
It is a coarse proxy: a map can sit in the centre for a wrong reason (the heart, a tube).

The mass is the absolute value: for a plain Grad-CAM map (already ReLU'd) that is the map itself,
for a signed map of logit(class) - logit(other) (`CamExplainer.maps(contrast=True)`) it is the
evidence either way, since a border marker that speaks against a class is as much a shortcut as
one that speaks for it. An all-zero map has no share (NaN), and means skip it.

`gradient_outside_share` turns the same box into a training loss (``model.focus_penalty``): the
share of the input gradient outside it, which a net lowers by reading the middle of the image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

# Side of the central box as a fraction of the image's height and width (0.5 x 0.5 = 25 %)
CENTRE = 0.5
REGION = "central box, 50 % of the height x 50 % of the width (25 % of the area)"


def centre_weights(height: int, width: int, fraction: float = CENTRE) -> torch.Tensor:
    """``H x W`` weights: the share of each pixel's area inside the centred box of
    ``fraction * H`` x ``fraction * W`` (pixel (i, j) covers [i, i+1) x [j, j+1)), so the box's
    area is exact at any size, not rounded to whole pixels."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")

    def axis(n: int) -> torch.Tensor:
        lo, hi = n * (1 - fraction) / 2, n * (1 + fraction) / 2
        start = torch.arange(n, dtype=torch.float64)
        return (
            torch.minimum(start + 1, torch.tensor(hi)) - torch.maximum(start, torch.tensor(lo))
        ).clamp(0, 1)

    return axis(height)[:, None] * axis(width)[None, :]


def central_share(maps: torch.Tensor, fraction: float = CENTRE) -> torch.Tensor:
    """Per map, the fraction of its mass (absolute value) inside the central box: ``maps``
    ``H x W`` or ``N x H x W`` (any units: the share does not depend on the scale) -> float64
    ``N`` (a 0-d tensor for one map); NaN for an all-zero map. NaN pixels (outside the part a
    norm=true network saw) count as zero."""
    single = maps.dim() == 2
    m = maps[None] if single else maps
    if m.dim() != 3:
        raise ValueError(f"expected H x W or N x H x W maps, got shape {list(maps.shape)}")
    pos = torch.nan_to_num(m.detach().double().cpu(), nan=0.0).abs()
    weights = centre_weights(m.shape[-2], m.shape[-1], fraction)
    total = pos.sum((-2, -1))
    inside = (pos * weights).sum((-2, -1))
    share = torch.where(
        total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, math.nan)
    )
    return share[0] if single else share


def gradient_outside_share(
    images: torch.Tensor, logits: torch.Tensor, fraction: float = CENTRE
) -> torch.Tensor:
    """The mean over the batch of the share of each image's input gradient (of the sum of its
    log-probabilities, Ross et al. 2017, "Right for the Right Reasons") that lies outside the
    central box: 0 when only the centre moves the output, 0.75 for a gradient spread evenly over
    a 0.5 box. Differentiable (``create_graph``), so a training loss can push the evidence into
    the box; a ratio rather than the paper's squared sum, so its weight needs no rescaling with
    the image size or the net. ``images`` must require grad and ``logits`` come from them."""
    log_probs = torch.log_softmax(logits.float(), dim=1)
    (grad,) = torch.autograd.grad(log_probs.sum(), images, create_graph=True)
    mass = grad.float().abs().sum(1)  # N x H x W, over the channels
    outside = _outside_weights(mass.shape[-2], mass.shape[-1], fraction, mass.device)
    return ((mass * outside).sum((1, 2)) / mass.sum((1, 2)).clamp_min(1e-12)).mean()


@functools.lru_cache(maxsize=8)
def _outside_weights(
    height: int, width: int, fraction: float, device: torch.device
) -> torch.Tensor:
    # Once per input size and device: the loss runs every training step
    return (1 - centre_weights(height, width, fraction)).float().to(device)


class _Hardsigmoid(torch.nn.Module):
    """`nn.Hardsigmoid` as relu6(x + 3) / 6: the same values, and twice differentiable in torch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(x + 3) / 6


def twice_differentiable(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every `nn.Hardsigmoid` (MobileNetV3's squeeze-excitation gate) replaced in
    place by the same function in ops that have a second derivative in torch, which
    `gradient_outside_share`'s loss needs (torch has none for hardsigmoid's backward)."""
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Hardsigmoid):
                setattr(module, child_name, _Hardsigmoid())
    return net


def summarize(shares: Sequence[torch.Tensor], names: Sequence[str]) -> dict[str, Any]:
    """``shares[c]``: the shares of class c's images -> ``{"overall", "per_class", "images",
    "region"}``: means over the maps that have a share, overall weighted by images (None when a
    class has none)."""

    def mean(values: torch.Tensor) -> float | None:
        values = values[~values.isnan()]
        return float(values.mean()) if values.numel() else None

    flat = [s.flatten().double() for s in shares]
    every = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)
    return {
        "overall": mean(every),
        "per_class": {name: mean(s) for name, s in zip(names, flat, strict=True)},
        "images": int((~every.isnan()).sum()),
        "region": REGION,
    }


class ShareRecorder:
    """Stands in for a `CamExplainer` and records the central share of every map it hands out,
    by target class, so the per-class mean maps (`class_mean_maps`) and their shares come from
    one pass over the images."""

    def __init__(self, explainer: Any, num_classes: int) -> None:
        self.explainer = explainer
        self.input_size = explainer.input_size
        self.shares: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]

    def maps(self, images: torch.Tensor, targets: Any = None, **kwargs: Any) -> torch.Tensor:
        out = self.explainer.maps(images, targets, **kwargs)
        if targets is None:  # the predicted class: not known here, nothing to file it under
            return out
        target = torch.as_tensor(targets, dtype=torch.long).flatten().expand(out.shape[0])
        shares = central_share(out).reshape(-1)
        for c in target.unique().tolist():
            self.shares[c].append(shares[target == c])
        return out

    def per_class(self) -> list[torch.Tensor]:
        return [torch.cat(s) if s else torch.zeros(0, dtype=torch.float64) for s in self.shares]
