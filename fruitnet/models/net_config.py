"""ProxylessNAS net configs in the official JSON format (``proxyless_gpu.config``): reading a file
and checking that a config can be built, with one clear line naming the offending key.

Net-config keys read here: ``bn`` {momentum, eps}; ``first_conv`` (a ConvLayer: in_channels,
out_channels, kernel_size, stride); ``blocks``: a list of {``mobile_inverted_conv``: {name:
MBInvertedConvLayer | FusedMBConvLayer (fruitnet's extension) | ZeroLayer, in_channels,
out_channels, kernel_size, stride, expand_ratio}, ``shortcut``: {name: IdentityLayer, ...} |
null}; ``feature_mix_layer`` (a 1x1 ConvLayer) and ``classifier`` (a LinearLayer: in_features; out_features and dropout_rate are the run's own).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OPS = ("MBInvertedConvLayer", "FusedMBConvLayer", "ZeroLayer")


class ArchConfigError(ValueError):
    """A net config that cannot be built (unknown op, channel mismatch, input too small...)."""


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


def conv_out_side(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with symmetric k//2 padding: floor((size + 2*(k//2) - k) / s) + 1."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def check_arch(
    config: Any, input_size: int | None = None, *, source: str = "arch config"
) -> list[int]:
    """Validate a net config; returns each block's output side (when ``input_size`` is given).

    Raises `ArchConfigError` with one line naming ``source`` and the offending key.
    """
    if not isinstance(config, Mapping):
        raise ArchConfigError(
            f"{source}: a net config is a JSON object, got {type(config).__name__}"
        )
    check = _ArchChecker(source, input_size)
    for key in ("first_conv", "blocks", "feature_mix_layer", "classifier"):
        if key not in config:
            raise check.fail(key, "missing")
    channels, size = check.first_conv(config["first_conv"])
    blocks = config["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise check.fail("blocks", "must be a non-empty list")
    sides = []
    for i, block in enumerate(blocks):
        channels, size = check.block(i, block, channels, size)
        sides.append(size)
    check.head(config["feature_mix_layer"], config["classifier"], channels)
    return sides


class _ArchChecker:
    """The checks of `check_arch`, one method per part of the net config, in config order."""

    def __init__(self, source: str, input_size: int | None) -> None:
        self.source = source
        self.input_size = input_size

    def fail(self, key: str, why: str) -> ArchConfigError:
        return ArchConfigError(f"{self.source}: key '{key}': {why}")

    def need_int(self, node: Any, key: str, where: str, minimum: int = 1) -> int:
        value = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{where}.{key}", f"needs an integer >= {minimum}, got {value!r}")
        return value

    def first_conv(self, first: Any) -> tuple[int, int | None]:
        if self.need_int(first, "in_channels", "first_conv") != 3:
            raise self.fail(
                "first_conv.in_channels", f"must be 3 (RGB), got {first['in_channels']}"
            )
        channels = self.need_int(first, "out_channels", "first_conv")
        size = self.input_size
        if size is not None:
            size = conv_out_side(
                size,
                self.need_int(first, "kernel_size", "first_conv"),
                self.need_int(first, "stride", "first_conv"),
            )
        return channels, size

    def block(self, i: int, block: Any, channels: int, size: int | None) -> tuple[int, int | None]:
        """(channels, side) after block ``i``."""
        where = f"blocks.{i}.mobile_inverted_conv"
        op = block.get("mobile_inverted_conv") if isinstance(block, Mapping) else None
        if not isinstance(op, Mapping):
            raise self.fail(where, "missing")
        name = op.get("name")
        if name not in OPS:
            raise self.fail(f"{where}.name", f"unknown op {name!r}; valid: {', '.join(OPS)}")
        shortcut = block.get("shortcut")
        if shortcut is not None and (
            not isinstance(shortcut, Mapping) or shortcut.get("name") != "IdentityLayer"
        ):
            raise self.fail(f"blocks.{i}.shortcut", "must be null or an IdentityLayer")
        if name == "ZeroLayer":
            if op.get("stride", 1) != 1:
                raise self.fail(
                    f"{where}.stride", "a ZeroLayer block is an identity: stride must be 1"
                )
            return channels, size
        c_in = self.need_int(op, "in_channels", where)
        if c_in != channels:
            raise self.fail(
                f"{where}.in_channels",
                f"is {c_in} but the previous layer gives {channels} channels",
            )
        c_out = self.need_int(op, "out_channels", where)
        kernel = self.need_int(op, "kernel_size", where)
        stride = self.need_int(op, "stride", where)
        self.need_int(op, "expand_ratio", where)
        if kernel % 2 == 0:
            raise self.fail(f"{where}.kernel_size", f"must be odd, got {kernel}")
        if shortcut is not None and (stride != 1 or c_in != c_out):
            raise self.fail(
                f"blocks.{i}.shortcut", "an identity shortcut needs stride 1 and in == out"
            )
        if size is not None:
            # With k//2 padding a map never shrinks below 1x1, so "too many stride-2 blocks" shows
            # as a stride-2 block whose input is already 1x1 (it would reach size 0 at 1/2 px).
            if stride > 1 and size <= 1:
                raise self.fail(
                    f"{where}.stride",
                    f"the feature map is already 1x1 before this stride-{stride} block at input "
                    f"size {self.input_size} (too many stride-2 blocks for this input)",
                )
            size = conv_out_side(size, kernel, stride)
        return c_out, size

    def head(self, mix: Any, classifier: Any, channels: int) -> None:
        if mix is not None:
            if self.need_int(mix, "in_channels", "feature_mix_layer") != channels:
                raise self.fail(
                    "feature_mix_layer.in_channels",
                    f"is {mix['in_channels']} but the last block gives {channels} channels",
                )
            channels = self.need_int(mix, "out_channels", "feature_mix_layer")
        features = self.need_int(classifier, "in_features", "classifier")
        if features != channels:
            raise self.fail(
                "classifier.in_features", f"is {features} but the features have {channels}"
            )
