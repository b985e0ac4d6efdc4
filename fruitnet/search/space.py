"""The search space: which candidate ops, stages and head a search explores (`SearchSpace`, read
from the ``search`` config group), and the net config (official ``proxyless_*.config`` JSON format)
of one path through it (`arch_config`), which `fruitnet.models.proxyless.ProxylessNASNets` builds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

ZERO = "zero"
_OP_RE = re.compile(r"^(\d+)x(\d+)_(MBConv|FusedMBConv)(\d+)$")
# Candidate name -> the net config's layer name
_LAYERS = {"MBConv": "MBInvertedConvLayer", "FusedMBConv": "FusedMBConvLayer"}
ARCH_MODES = ("two", "full")


class SearchConfigError(ValueError):
    """A search space or search setting that cannot run (named key, one line)."""


class Op(NamedTuple):
    kind: str  # "MBConv" (depthwise) or "FusedMBConv" (full KxK conv)
    kernel: int
    expand: int


def parse_op(name: str, key: str = "search.candidates") -> Op | None:
    """``"5x5_MBConv3"`` -> Op("MBConv", 5, 3); ``"zero"`` -> None; anything else: an error."""
    if name == ZERO:
        return None
    m = _OP_RE.match(str(name))
    if not m or m.group(1) != m.group(2) or int(m.group(1)) % 2 == 0 or int(m.group(4)) < 1:
        raise SearchConfigError(
            f"{key}: unknown op {name!r}; valid: KxK_MBConvE or KxK_FusedMBConvE with odd K and "
            f"E >= 1 (e.g. 3x3_MBConv3, 7x7_MBConv6, 3x3_FusedMBConv4) or {ZERO!r}"
        )
    return Op(m.group(3), int(m.group(1)), int(m.group(4)))


def op_config(name: str, c_in: int, c_out: int, stride: int) -> dict[str, Any]:
    """A candidate's ``mobile_inverted_conv`` entry of the net config (what `build_op` builds)."""
    op = parse_op(name)
    if op is None:
        return {"name": "ZeroLayer", "stride": stride}
    return {
        "name": _LAYERS[op.kind],
        "in_channels": c_in,
        "out_channels": c_out,
        "kernel_size": op.kernel,
        "stride": stride,
        "expand_ratio": op.expand,
    }


@dataclass(frozen=True)
class SearchSpace:
    """The supernet's shape: stem, fixed first block, stages of mixed edges, head."""

    first_conv: int  # channels of the 3x3 stride-2 stem
    first_block: int  # output channels of the fixed 3x3 MBConv1 block
    widths: tuple[int, ...]  # per stage
    depths: tuple[int, ...]  # mixed edges per stage
    strides: tuple[int, ...]  # stride of each stage's first block
    candidates: tuple[str, ...]  # MBConv / FusedMBConv ops; "zero" is added where allowed
    zero: bool  # offer the zero op on the non-first blocks of a stage
    feature_mix: int  # channels of the 1x1 feature-mix conv (0 = none)
    bn_momentum: float = 0.1
    bn_eps: float = 1e-3

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SearchSpace:
        def ints(key: str) -> tuple[int, ...]:
            value = cfg.get(key)
            if not isinstance(value, Sequence) or isinstance(value, str) or not value:
                raise SearchConfigError(f"search.{key} must be a non-empty list, got {value!r}")
            out = tuple(int(v) for v in value)
            if any(v < 1 for v in out):
                raise SearchConfigError(f"search.{key} must be positive integers, got {value!r}")
            return out

        widths, depths, strides = ints("widths"), ints("depths"), ints("strides")
        if not len(widths) == len(depths) == len(strides):
            raise SearchConfigError(
                f"search.widths, depths and strides need one entry per stage, got "
                f"{len(widths)}, {len(depths)} and {len(strides)}"
            )
        if any(s not in (1, 2) for s in strides):
            raise SearchConfigError(f"search.strides must be 1 or 2, got {list(strides)}")
        candidates = tuple(str(c) for c in cfg.get("candidates") or ())
        ops = [parse_op(c) for c in candidates]
        if not any(op is not None for op in ops):
            raise SearchConfigError("search.candidates needs at least one op besides zero")
        zero = ZERO in candidates
        bn = cfg.get("bn") or {}
        return cls(
            first_conv=int(cfg["first_conv"]),
            first_block=int(cfg["first_block"]),
            widths=widths,
            depths=depths,
            strides=strides,
            candidates=tuple(c for c in candidates if c != ZERO),
            zero=zero,
            feature_mix=int(cfg.get("feature_mix") or 0),
            bn_momentum=float(bn.get("momentum", 0.1)),
            bn_eps=float(bn.get("eps", 1e-3)),
        )

    @property
    def bn(self) -> dict[str, float]:
        return {"momentum": self.bn_momentum, "eps": self.bn_eps}


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


def _conv_layer(c_in: int, c_out: int, kernel: int, stride: int) -> dict[str, Any]:
    return {
        "name": "ConvLayer",
        "kernel_size": kernel,
        "stride": stride,
        "dilation": 1,
        "groups": 1,
        "bias": False,
        "has_shuffle": False,
        "in_channels": c_in,
        "out_channels": c_out,
        "use_bn": True,
        "act_func": "relu6",
        "dropout_rate": 0,
        "ops_order": "weight_bn_act",
    }


def arch_config(
    space: SearchSpace,
    edge_info: Sequence[Mapping[str, Any]],
    choices: Sequence[int],
    num_classes: int,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """Net config of one path through the space, in the official ``proxyless_*.config`` format."""
    blocks = [
        {
            "name": "MobileInvertedResidualBlock",
            "mobile_inverted_conv": {
                "name": "MBInvertedConvLayer",
                "in_channels": space.first_conv,
                "out_channels": space.first_block,
                "kernel_size": 3,
                "stride": 1,
                "expand_ratio": 1,
            },
            "shortcut": None,
        }
    ]
    for info, choice in zip(edge_info, choices, strict=True):
        shortcut = identity_config(info["in"]) if info["residual"] else None
        op = op_config(info["names"][choice], info["in"], info["out"], info["stride"])
        blocks.append(
            {
                "name": "MobileInvertedResidualBlock",
                "mobile_inverted_conv": op,
                "shortcut": shortcut,
            }
        )
    last = space.widths[-1]
    features = space.feature_mix or last
    return {
        "name": "ProxylessNASNets",
        "bn": space.bn,
        "first_conv": _conv_layer(3, space.first_conv, 3, 2),
        "blocks": blocks,
        "feature_mix_layer": _conv_layer(last, space.feature_mix, 1, 1)
        if space.feature_mix
        else None,
        "classifier": {
            "name": "LinearLayer",
            "in_features": features,
            "out_features": num_classes,
            "bias": True,
            "use_bn": False,
            "act_func": None,
            "dropout_rate": dropout,
            "ops_order": "weight_bn_act",
        },
    }


def parse_targets(cfg: Mapping[str, Any]) -> list[float]:
    """``search.targets``: latencies in ms, sorted, duplicates dropped; [] when unset (null).
    Anything else than a non-empty list of positive numbers is a one-line error."""
    raw = cfg.get("targets")
    if raw is None:
        return []
    example = "e.g. search.targets=[2,3.5,5]"
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise SearchConfigError(f"search.targets must be a list of latencies in ms ({example}), "
                                f"got {raw!r}")  # fmt: skip
    if not raw:
        raise SearchConfigError(
            f"search.targets is empty: give at least one latency in ms ({example}), or null to "
            "use search.target_latency_ms"
        )
    out = []
    for value in raw:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            raise SearchConfigError(
                f"search.targets: {value!r} is not a latency in ms (a number > 0); {example}"
            )
        out.append(float(value))
    return sorted(set(out))
