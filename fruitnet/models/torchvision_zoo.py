"""Any torchvision classification builder by name: ``model=torchvision model.arch=<builder>``.

Everything per architecture comes from torchvision itself: the builders from
``torchvision.models.list_models``, the eval pipeline (resize, crop, mean/std) from the weights
enum's ``transforms()``, the smallest input from its ``meta``, the weights file from its URL (the
torch hub cache, `fruitnet.models.weights`), the classifier and the Grad-CAM layer from the built
network (`fruitnet.models.zoo.inspect_net`).
"""

from __future__ import annotations

import warnings
from functools import cache, partial

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models import list_models as torchvision_builders

from fruitnet.models.registry import ModelSpec, register_model
from fruitnet.models.weights import WeightsSource, torchvision_source
from fruitnet.models.zoo import inspect_net, require_arch, runs_at, unknown_arch

FAMILY = "torchvision"
DEFAULT_WEIGHTS = "DEFAULT"


@cache
def names() -> tuple[str, ...]:
    """The classification builders (not detection, segmentation, video or quantized ones)."""
    return tuple(torchvision_builders(module=torchvision.models))


def check_arch(arch: object) -> str:
    arch = require_arch(FAMILY, arch)
    if arch not in names():
        raise unknown_arch(FAMILY, arch, names())
    return arch


def weights_enum(arch: str, weights_name: str = DEFAULT_WEIGHTS):
    enum = get_model_weights(arch)
    if weights_name == DEFAULT_WEIGHTS:
        return enum.DEFAULT
    try:
        return enum[weights_name]
    except KeyError:
        valid = ", ".join([DEFAULT_WEIGHTS, *(w.name for w in enum)])
        raise ValueError(
            f"unknown weights_name {weights_name!r} for {arch}; valid: {valid}"
        ) from None


@cache
def _aux(arch: str) -> tuple[dict[str, object], tuple[str, ...]]:
    """GoogLeNet and Inception v3 return extra auxiliary logits in training: they are built
    without them (one output, like every other model), with the input transform their ImageNet
    weights expect, and a weights file's auxiliary keys are dropped. Returns (builder options,
    key prefixes to drop)."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GoogLeNet's note on its future default init
            net = get_model(arch, weights=None)
            if not getattr(net, "aux_logits", False):
                return {}, ()
            options = {"aux_logits": False, "transform_input": True, "init_weights": True}
            plain = get_model(arch, weights=None, **options)
    except (NotImplementedError, RuntimeError):  # an init that copies data: no auxiliary head
        return {}, ()
    dropped = {n for n, _ in net.named_children()} - {n for n, _ in plain.named_children()}
    return options, tuple(sorted(f"{n}." for n in dropped))


def build_torchvision(
    *,
    num_classes: int,
    input_size: int = 224,
    arch: str,
    weights_name: str = DEFAULT_WEIGHTS,
    bn_momentum: float | None = None,
    **options: object,
) -> nn.Module:
    """torchvision's ``arch``, randomly initialised, with a ``num_classes`` classifier.

    ``weights_name`` picks the member of the weights enum that ``pretrained`` loads (DEFAULT:
    torchvision's best); ``options`` go to torchvision's builder (e.g. ``dropout``).
    ``bn_momentum`` (None: the net's own) sets every BatchNorm's running-statistics momentum.
    MobileNetV3 (0.01) and MNASNet (0.0003) ship ImageNet-schedule values: trained from scratch
    for a few hundred steps their running statistics stay near the init, and in eval mode they
    predict one class (fruits-360-small, 8 epochs: 97 % train accuracy, 1 % test); with 0.1
    (torch's default) the running statistics follow the data (tested on the first BatchNorm) and
    the same runs reach 84-92 % (bench/SEARCH.md; the 1 % is that file at commit 5abd80d)."""
    arch = check_arch(arch)
    spec = resolve_torchvision(arch=arch, weights_name=weights_name)
    build = partial(get_model, arch, weights=None, **_aux(arch)[0], **options)
    if input_size != spec.input_size and not runs_at(build, input_size):
        smallest = min(weights_enum(arch, weights_name).meta.get("min_size", (1, 1)))
        need = (
            f"takes {spec.input_size} px inputs only"
            if spec.fixed_size
            else f"cannot take {input_size} px inputs (its weights' min_size: {smallest} px)"
        )
        raise ValueError(
            f"torchvision {arch} {need}, got {input_size} px: use norm=true or "
            f"data.image_size={spec.input_size}"
        )
    net = build(num_classes=num_classes)
    if bn_momentum is not None:
        if not 0.0 < float(bn_momentum) <= 1.0:
            raise ValueError(f"model.kwargs.bn_momentum must be in (0, 1], got {bn_momentum!r}")
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = float(bn_momentum)
    return net


def weights_source(*, arch: str, weights_name: str = DEFAULT_WEIGHTS, **_: object) -> WeightsSource:
    return torchvision_source(weights_enum(check_arch(arch), weights_name).url)


def resolve_torchvision(
    *, arch: object = None, weights_name: str = DEFAULT_WEIGHTS, **_: object
) -> ModelSpec:
    return _resolve(check_arch(arch), str(weights_name))


@cache
def _resolve(arch: str, weights_name: str) -> ModelSpec:
    weights = weights_enum(arch, weights_name)
    pipeline = weights.transforms()
    crop = int(pipeline.crop_size[0])
    options, dropped = _aux(arch)
    facts = inspect_net(partial(get_model, arch, weights=None, **options), crop)
    return ModelSpec(
        name=f"{FAMILY}/{arch}",
        builder=build_torchvision,
        input_size=crop,
        mean=tuple(pipeline.mean),
        std=tuple(pipeline.std),
        weights_url=weights.url,
        description=f"torchvision {arch}, ImageNet weights {weights.name}",
        head=facts.head,
        weights_source=weights_source,
        cam_layer=facts.cam_layer,
        resize=int(pipeline.resize_size[0]),
        fixed_size=facts.fixed_size,
        ignore_keys=dropped,
    )


register_model(
    ModelSpec(
        name=FAMILY,
        builder=build_torchvision,
        input_size=224,
        description="any torchvision classifier (model.arch=<builder>)",
        resolve=resolve_torchvision,
    )
)
