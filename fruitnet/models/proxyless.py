"""ProxylessNAS networks built from a net config in the official JSON format.

The built-in network is ProxylessNAS-GPU (Cai, Zhu, Han, ICLR 2019), shipped as
``fruitnet/models/arch/proxyless_gpu.json`` (the official ``proxyless_gpu.config``). An
architecture found by ``python -m fruitnet.search`` is a file of the same format and is built by the
same code (``model=proxyless model.arch=PATH``).

Module and attribute names follow ``mit-han-lab/proxylessnas`` (``proxyless_nas/layers.py``,
``nas_modules.py``) so that ``state_dict()`` keys equal those of the official ``proxyless_gpu.pth``
and it loads strictly. Facts: ``shared/docs/proxyless_gpu.md``.

Net-config keys read here: ``bn`` {momentum, eps}; ``first_conv`` (a ConvLayer: in_channels,
out_channels, kernel_size, stride); ``blocks``: a list of {``mobile_inverted_conv``: {name:
MBInvertedConvLayer | ZeroLayer, in_channels, out_channels, kernel_size, stride, expand_ratio},
``shortcut``: {name: IdentityLayer, ...} | null}; ``feature_mix_layer`` (a 1x1 ConvLayer) and
``classifier`` (a LinearLayer: in_features; out_features and dropout_rate are replaced by the
run's class count and ``dropout``).
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

ARCH_DIR = Path(__file__).resolve().parent / "arch"
BUILTIN_ARCH = ARCH_DIR / "proxyless_gpu.json"
BN_EPS = 1e-3  # the official config's value, not PyTorch's 1e-5: the weights were trained with it
BN_MOMENTUM = 0.1
OPS = ("MBInvertedConvLayer", "ZeroLayer")


class ArchConfigError(ValueError):
    """A net config that cannot be built (unknown op, channel mismatch, input too small...)."""


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


def load_arch(path: str | Path, input_size: int | None = None) -> dict[str, Any]:
    """Read a net-config JSON file and check it (against ``input_size`` when given)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ArchConfigError(f"arch file {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArchConfigError(f"arch file {path} is not valid JSON: {err}") from None
    check_arch(config, input_size, source=str(path))
    return config


def resolve_arch(arch: str | Path | Mapping[str, Any] | None, input_size: int | None = None):
    """``None`` -> the built-in net; a path -> its file; a dict -> itself. Always checked."""
    if arch is None:
        return builtin_arch()
    if isinstance(arch, (str, Path)):
        return load_arch(arch, input_size)
    config = copy.deepcopy(dict(arch))
    check_arch(config, input_size)
    return config


def _spatial(size: int, kernel: int, stride: int) -> int:
    # Conv with symmetric padding k//2: out = floor((size + 2*(k//2) - k) / stride) + 1
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def check_arch(
    config: Any, input_size: int | None = None, *, source: str = "arch config"
) -> list[int]:
    """Validate a net config; returns each block's output side (when ``input_size`` is given).

    Raises `ArchConfigError` with one line naming ``source`` and the offending key.
    """

    def fail(key: str, why: str) -> ArchConfigError:
        return ArchConfigError(f"{source}: key '{key}': {why}")

    def need_int(node: Mapping, key: str, where: str, minimum: int = 1) -> int:
        value = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(f"{where}.{key}", f"needs an integer >= {minimum}, got {value!r}")
        return value

    if not isinstance(config, Mapping):
        raise ArchConfigError(
            f"{source}: a net config is a JSON object, got {type(config).__name__}"
        )
    for key in ("first_conv", "blocks", "feature_mix_layer", "classifier"):
        if key not in config:
            raise fail(key, "missing")
    first = config["first_conv"]
    if need_int(first, "in_channels", "first_conv") != 3:
        raise fail("first_conv.in_channels", f"must be 3 (RGB), got {first['in_channels']}")
    channels = need_int(first, "out_channels", "first_conv")
    size = input_size
    if size is not None:
        size = _spatial(
            size,
            need_int(first, "kernel_size", "first_conv"),
            need_int(first, "stride", "first_conv"),
        )
    blocks = config["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise fail("blocks", "must be a non-empty list")
    sides = []
    for i, block in enumerate(blocks):
        where = f"blocks.{i}.mobile_inverted_conv"
        op = block.get("mobile_inverted_conv") if isinstance(block, Mapping) else None
        if not isinstance(op, Mapping):
            raise fail(where, "missing")
        name = op.get("name")
        if name not in OPS:
            raise fail(f"{where}.name", f"unknown op {name!r}; valid: {', '.join(OPS)}")
        shortcut = block.get("shortcut")
        if shortcut is not None and (
            not isinstance(shortcut, Mapping) or shortcut.get("name") != "IdentityLayer"
        ):
            raise fail(f"blocks.{i}.shortcut", "must be null or an IdentityLayer")
        if name == "ZeroLayer":
            if op.get("stride", 1) != 1:
                raise fail(f"{where}.stride", "a ZeroLayer block is an identity: stride must be 1")
            sides.append(size)
            continue
        c_in = need_int(op, "in_channels", where)
        if c_in != channels:
            raise fail(
                f"{where}.in_channels",
                f"is {c_in} but the previous layer gives {channels} channels",
            )
        c_out = need_int(op, "out_channels", where)
        kernel = need_int(op, "kernel_size", where)
        stride = need_int(op, "stride", where)
        need_int(op, "expand_ratio", where)
        if kernel % 2 == 0:
            raise fail(f"{where}.kernel_size", f"must be odd, got {kernel}")
        if shortcut is not None and (stride != 1 or c_in != c_out):
            raise fail(f"blocks.{i}.shortcut", "an identity shortcut needs stride 1 and in == out")
        if size is not None:
            # With k//2 padding a map never shrinks below 1x1, so "too many stride-2 blocks" shows
            # as a stride-2 block whose input is already 1x1 (it would reach size 0 at 1/2 px).
            if stride > 1 and size <= 1:
                raise fail(
                    f"{where}.stride",
                    f"the feature map is already 1x1 before this stride-{stride} block at input "
                    f"size {input_size} (too many stride-2 blocks for this input)",
                )
            size = _spatial(size, kernel, stride)
        sides.append(size)
        channels = c_out
    mix = config["feature_mix_layer"]
    if mix is not None:
        if need_int(mix, "in_channels", "feature_mix_layer") != channels:
            raise fail(
                "feature_mix_layer.in_channels",
                f"is {mix['in_channels']} but the last block gives {channels} channels",
            )
        channels = need_int(mix, "out_channels", "feature_mix_layer")
    features = need_int(config["classifier"], "in_features", "classifier")
    if features != channels:
        raise fail("classifier.in_features", f"is {features} but the features have {channels}")
    return sides


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


class MBInvertedConvLayer(nn.Module):
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
            "name": "MBInvertedConvLayer",
            "in_channels": c_in,
            "out_channels": c_out,
            "kernel_size": kernel,
            "stride": stride,
            "expand_ratio": expand,
        }
        mid = round(c_in * expand)
        # With expand 1 the official layer has no inverted_bottleneck at all (so no keys).
        self.inverted_bottleneck = conv_bn(c_in, mid, 1, bn=bn) if expand > 1 else None
        self.depth_conv = conv_bn(mid, mid, kernel, stride=stride, groups=mid, bn=bn)
        self.point_linear = conv_bn(mid, c_out, 1, act=False, bn=bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


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
    return MBInvertedConvLayer(
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


def identity_config(channels: int) -> dict[str, Any]:
    """The official ``IdentityLayer`` shortcut entry."""
    return {
        "name": "IdentityLayer",
        "in_channels": channels,
        "out_channels": channels,
        "use_bn": False,
        "act_func": None,
        "dropout_rate": 0,
        "ops_order": "weight_bn_act",
    }


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
