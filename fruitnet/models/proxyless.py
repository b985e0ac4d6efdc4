"""ProxylessNAS-GPU (Cai, Zhu, Han, ICLR 2019), built natively from the official net config.

Module and attribute names follow ``mit-han-lab/proxylessnas`` (``proxyless_nas/layers.py``,
``nas_modules.py``) so that ``state_dict()`` keys equal those of the official ``proxyless_gpu.pth``
and it loads strictly. Facts: ``shared/docs/proxyless_gpu.md``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

BN_EPS = 1e-3  # the official config's value, not PyTorch's 1e-5: the weights were trained with it
BN_MOMENTUM = 0.1
STEM_CHANNELS = 40
FEATURE_MIX_CHANNELS = 1728


class MBConv(NamedTuple):
    kernel: int
    expand: int
    out: int
    stride: int


# The 22 block slots of proxyless_gpu.config. None is a ZeroLayer slot: an identity block without
# parameters, kept so that the indices (and hence keys such as "blocks.21.*") match the official
# checkpoint. A real block gets an identity shortcut exactly when stride is 1 and in == out.
BLOCKS: tuple[MBConv | None, ...] = (
    MBConv(3, 1, 24, 1),  # 0  first block, no expansion conv
    MBConv(5, 3, 32, 2),  # 1
    None,  # 2
    None,  # 3
    None,  # 4
    MBConv(7, 3, 56, 2),  # 5
    None,  # 6
    None,  # 7
    MBConv(3, 3, 56, 1),  # 8
    MBConv(7, 6, 112, 2),  # 9
    None,  # 10
    None,  # 11
    MBConv(5, 3, 112, 1),  # 12
    MBConv(5, 6, 128, 1),  # 13
    None,  # 14
    MBConv(3, 3, 128, 1),  # 15
    MBConv(5, 3, 128, 1),  # 16
    MBConv(7, 6, 256, 2),  # 17
    MBConv(7, 6, 256, 1),  # 18
    MBConv(7, 6, 256, 1),  # 19
    MBConv(5, 6, 256, 1),  # 20
    MBConv(7, 6, 432, 1),  # 21
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise nn.Conv2d that runs in fp32 under CPU autocast: oneDNN's bf16 depthwise
    backward is ~2x slower than fp32 on AVX-512 BF16 CPUs. Same params and state_dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def conv_bn(
    c_in: int, c_out: int, kernel: int, *, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (no bias, symmetric k//2 padding) -> BN -> optional ReLU6, as ``conv``/``bn``/``act``."""
    conv = DepthwiseConv2d if groups > 1 and groups == c_in == c_out else nn.Conv2d
    layers = OrderedDict(
        conv=conv(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        bn=_bn(c_out),
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBInvertedConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = round(c_in * expand)
        # With expand 1 the official layer has no inverted_bottleneck at all (so no keys).
        self.inverted_bottleneck = conv_bn(c_in, mid, 1) if expand > 1 else None
        self.depth_conv = conv_bn(mid, mid, kernel, stride=stride, groups=mid)
        self.point_linear = conv_bn(mid, c_out, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ZeroLayer(nn.Module):
    """The searched "no op" choice. Its block is an identity, so this is never called there."""

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


def _make_blocks() -> tuple[nn.ModuleList, int]:
    blocks = nn.ModuleList()
    channels = STEM_CHANNELS
    for cfg in BLOCKS:
        if cfg is None:
            blocks.append(MobileInvertedResidualBlock(ZeroLayer(), nn.Identity()))
            continue
        conv = MBInvertedConvLayer(channels, cfg.out, cfg.kernel, cfg.stride, cfg.expand)
        residual = cfg.stride == 1 and cfg.out == channels
        blocks.append(MobileInvertedResidualBlock(conv, nn.Identity() if residual else None))
        channels = cfg.out
    return blocks, channels


class ProxylessNASGPU(nn.Module):
    """ProxylessNAS ``proxyless_gpu``: 7,119,848 params with 1000 classes (5,390,848 + 1,729 K).

    Any input side works (the head pools globally); 224 is the ImageNet setting.
    """

    def __init__(self, *, num_classes: int = 1000, input_size: int = 224, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.first_conv = conv_bn(3, STEM_CHANNELS, 3, stride=2)
        self.blocks, channels = _make_blocks()
        self.feature_mix_layer = conv_bn(channels, FEATURE_MIX_CHANNELS, 1)
        self.global_avg_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = LinearLayer(FEATURE_MIX_CHANNELS, num_classes, dropout)
        self.apply(_init_he_fout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.global_avg_pool(self.feature_mix_layer(x))
        return self.classifier(torch.flatten(x, 1))


def _init_he_fout(module: nn.Module) -> None:
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
