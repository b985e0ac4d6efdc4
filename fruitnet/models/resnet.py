"""torchvision ResNet-50, with the pretrained source taken from torchvision's weights API."""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from fruitnet.models.registry import register_model
from fruitnet.models.weights import WeightsSource, torchvision_source

DEFAULT_WEIGHTS = "IMAGENET1K_V2"


def weights_enum(weights_name: str = DEFAULT_WEIGHTS) -> ResNet50_Weights:
    try:
        return ResNet50_Weights[weights_name]
    except KeyError:
        valid = ", ".join(w.name for w in ResNet50_Weights)
        raise ValueError(
            f"unknown ResNet-50 weights_name {weights_name!r}; valid: {valid}"
        ) from None


def resnet50_source(*, weights_name: str = DEFAULT_WEIGHTS, **_: object) -> WeightsSource:
    return torchvision_source(weights_enum(weights_name).url)


@register_model(
    name="resnet50",
    input_size=224,
    weights_url=weights_enum(DEFAULT_WEIGHTS).url,
    description=f"torchvision ResNet-50, ImageNet weights {DEFAULT_WEIGHTS}",
    head="fc",
    weights_source=resnet50_source,
    cam_layer="layer4",
)
def build_resnet50(
    *, num_classes: int, input_size: int = 224, weights_name: str = DEFAULT_WEIGHTS
) -> nn.Module:
    """Randomly initialised ResNet-50 with a ``num_classes`` ``fc``.

    ``input_size`` is accepted for the registry's uniform signature; the global average pool makes
    the network size-agnostic. ``weights_name`` only matters for pretrained loading, but is
    validated here so a typo fails before any training starts.
    """
    del input_size
    weights_enum(weights_name)
    return resnet50(weights=None, num_classes=num_classes)
