"""ProxylessNAS networks built from a net config in the official JSON format.

The built-in network is ProxylessNAS-GPU (Cai, Zhu, Han, ICLR 2019), shipped as
``fruitnet/models/arch/proxyless_gpu.json`` (the official ``proxyless_gpu.config``). An
architecture found by ``python -m fruitnet.search`` is a file of the same format and is built by the
same code (``model=proxyless model.arch=PATH``).

Module and attribute names follow ``mit-han-lab/proxylessnas`` (``proxyless_nas/layers.py``,
``nas_modules.py``) so that ``state_dict()`` keys equal those of the official ``proxyless_gpu.pth``
and it loads strictly. Facts: ``shared/docs/proxyless_gpu.md``.

The net config is read and checked by `fruitnet.models.net_config`; ``bn`` {momentum, eps} and the
classifier's in_features are read here, its out_features and dropout_rate are replaced by the run's
class count and ``dropout``.
"""

from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fruitnet.models.net_config import check_arch, load_arch
from fruitnet.models.registry import register_model
from fruitnet.models.weights import PROXYLESS_GPU, WeightsSource

ARCH_DIR = Path(__file__).resolve().parent / "arch"
BUILTIN_ARCH = ARCH_DIR / "proxyless_gpu.json"
BN_EPS = 1e-3  # the official config's value, not PyTorch's 1e-5: the weights were trained with it
BN_MOMENTUM = 0.1
BN = Mapping[str, float] | None  # a net config's ``bn`` entry


@cache
def _builtin_text() -> str:
    return BUILTIN_ARCH.read_text()


def builtin_arch() -> dict[str, Any]:
    """A fresh copy of the built-in ProxylessNAS-GPU net config."""
    return json.loads(_builtin_text())


def _skeleton(config: Mapping[str, Any]) -> Any:
    """The parts that define the weights' shapes (the head's class count and dropout excluded)."""
    keys = ("first_conv", "blocks", "feature_mix_layer")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True)


def is_builtin_arch(config: str | Path | Mapping[str, Any] | None) -> bool:
    """True for the built-in ProxylessNAS-GPU (the only arch the official ImageNet weights fit)."""
    if config is None:
        return True
    if isinstance(config, (str, Path)):
        config = load_arch(config)
    return _skeleton(config) == _skeleton(builtin_arch())


def proxyless_source(*, arch: Any = None, **_: object) -> WeightsSource | None:
    """The official ImageNet weights fit the built-in arch only (a searched arch: none)."""
    return PROXYLESS_GPU if is_builtin_arch(arch) else None


def resolve_arch(arch: str | Path | Mapping[str, Any] | None, input_size: int | None = None):
    """``None`` -> the built-in net; a path -> its file; a dict -> itself. Always checked."""
    if arch is None:
        return builtin_arch()
    if isinstance(arch, (str, Path)):
        return load_arch(arch, input_size)
    config = copy.deepcopy(dict(arch))
    check_arch(config, input_size)
    return config


def _bn(channels: int, bn: Mapping[str, float] | None = None) -> nn.BatchNorm2d:
    bn = bn or {}
    return nn.BatchNorm2d(
        channels, eps=float(bn.get("eps", BN_EPS)), momentum=float(bn.get("momentum", BN_MOMENTUM))
    )


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise nn.Conv2d that runs in fp32 under CPU autocast: oneDNN's bf16 depthwise
    backward is ~2x slower than fp32 on AVX-512 BF16 CPUs. Same params and state_dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def conv_bn(
    c_in: int,
    c_out: int,
    kernel: int,
    *,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
    bn: Mapping[str, float] | None = None,
) -> nn.Sequential:
    """Conv (no bias, symmetric k//2 padding) -> BN -> optional ReLU6, as ``conv``/``bn``/``act``."""
    conv = DepthwiseConv2d if groups > 1 and groups == c_in == c_out else nn.Conv2d
    layers = OrderedDict(
        conv=conv(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        bn=_bn(c_out, bn),
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class _ExpandProjectLayer(nn.Module):
    """What the two block ops share: the constructor and their net-config entry."""

    NAME = ""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        expand: int,
        bn: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.config = {
            "name": self.NAME,
            "in_channels": c_in,
            "out_channels": c_out,
            "kernel_size": kernel,
            "stride": stride,
            "expand_ratio": expand,
        }
        self.build(c_in, round(c_in * expand), c_out, kernel, stride, bn)

    def build(self, c_in: int, mid: int, c_out: int, kernel: int, stride: int, bn: BN) -> None:
        raise NotImplementedError


class MBInvertedConvLayer(_ExpandProjectLayer):
    NAME = "MBInvertedConvLayer"

    def build(self, c_in: int, mid: int, c_out: int, kernel: int, stride: int, bn: BN) -> None:
        # With expand 1 the official layer has no inverted_bottleneck at all (so no keys).
        self.inverted_bottleneck = conv_bn(c_in, mid, 1, bn=bn) if mid != c_in else None
        self.depth_conv = conv_bn(mid, mid, kernel, stride=stride, groups=mid, bn=bn)
        self.point_linear = conv_bn(mid, c_out, 1, act=False, bn=bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class FusedMBConvLayer(_ExpandProjectLayer):
    """Fused-MBConv (EfficientNetV2, Tan & Le 2021): one full KxK conv expands (and strides), a
    1x1 conv projects, linear. fruitnet's extension of the official format (same keys as
    MBInvertedConvLayer): a search candidate kind for runtimes that run full convs at several
    times the FLOP rate of depthwise ones."""

    NAME = "FusedMBConvLayer"

    def build(self, c_in: int, mid: int, c_out: int, kernel: int, stride: int, bn: BN) -> None:
        self.expand_conv = conv_bn(c_in, mid, kernel, stride=stride, bn=bn)
        self.point_linear = conv_bn(mid, c_out, 1, act=False, bn=bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_linear(self.expand_conv(x))


class ZeroLayer(nn.Module):
    """The searched "no op" choice. Its block is an identity, so this is never called there."""

    config = {"name": "ZeroLayer", "stride": 1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class MobileInvertedResidualBlock(nn.Module):
    def __init__(self, mobile_inverted_conv: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.mobile_inverted_conv = mobile_inverted_conv
        self.shortcut = shortcut
        self.is_zero = isinstance(mobile_inverted_conv, ZeroLayer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_zero:
            return x
        out = self.mobile_inverted_conv(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class LinearLayer(nn.Module):
    """Official classifier: dropout *before* the Linear, keys ``classifier.linear.*``."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        return self.linear(x)


def build_op(op: Mapping[str, Any], bn: Mapping[str, float] | None = None) -> nn.Module:
    """``mobile_inverted_conv`` config -> module (checked by `check_arch` beforehand)."""
    if op["name"] == "ZeroLayer":
        return ZeroLayer()
    layer = FusedMBConvLayer if op["name"] == "FusedMBConvLayer" else MBInvertedConvLayer
    return layer(
        op["in_channels"],
        op["out_channels"],
        op["kernel_size"],
        op["stride"],
        op["expand_ratio"],
        bn=bn,
    )


def conv_layer(config: Mapping[str, Any], bn: Mapping[str, float] | None = None) -> nn.Sequential:
    """A ``ConvLayer`` config (weight_bn_act, relu6) -> conv/bn/act."""
    return conv_bn(
        config["in_channels"],
        config["out_channels"],
        config["kernel_size"],
        stride=config.get("stride", 1),
        act=config.get("act_func", "relu6") is not None,
        bn=bn,
    )


@register_model(
    name="proxyless",
    input_size=224,
    weights_url=PROXYLESS_GPU.url,
    description="ProxylessNAS-GPU (ICLR 2019), official ImageNet weights; model.arch=PATH: any net config",
    head="classifier.linear",
    weights_source=proxyless_source,
    # the 1x1 conv after the last block (1728 x 7 x 7 at 224 px); searched nets share it
    cam_layer="feature_mix_layer",
)
class ProxylessNASNets(nn.Module):
    """A ProxylessNAS network built from a net config (official JSON format).

    ``arch`` is a net-config dict, a path to a JSON file, or None for the built-in
    ProxylessNAS-GPU: 7,119,848 params with 1000 classes (5,390,848 + 1,729 K). Any input side
    the config's strides allow works (the head pools globally); 224 is the ImageNet setting.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        input_size: int = 224,
        dropout: float = 0.0,
        arch: str | Path | Mapping[str, Any] | None = None,
    ):
        super().__init__()
        config = resolve_arch(arch, input_size)
        config["classifier"] = {
            **config["classifier"],
            "out_features": num_classes,
            "dropout_rate": dropout,
        }
        self.config = config
        self.input_size = input_size
        bn = config.get("bn")
        self.first_conv = conv_layer(config["first_conv"], bn)
        self.blocks = nn.ModuleList()
        for block in config["blocks"]:
            shortcut = nn.Identity() if block.get("shortcut") is not None else None
            op = build_op(block["mobile_inverted_conv"], bn)
            self.blocks.append(MobileInvertedResidualBlock(op, shortcut))
        mix = config["feature_mix_layer"]
        self.feature_mix_layer = conv_layer(mix, bn) if mix is not None else None
        self.global_avg_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = LinearLayer(config["classifier"]["in_features"], num_classes, dropout)
        self.apply(init_he_fout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        if self.feature_mix_layer is not None:
            x = self.feature_mix_layer(x)
        x = self.global_avg_pool(x)
        return self.classifier(torch.flatten(x, 1))


# The name the registry and older code use for the built-in network.
ProxylessNASGPU = ProxylessNASNets


def init_he_fout(module: nn.Module) -> None:
    # The official training init ("he_fout" in proxyless_nas/utils.py init_model).
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.weight.size(1))
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)
