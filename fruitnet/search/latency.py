"""Latency lookup table: every candidate op timed at its input shape on the run's own device.

Each entry is the forward time (ms per batch of ``search.latency_batch`` images, eval mode, no
grad, after warm-up runs) of one block exactly as the finished network runs it: the MBConv op
plus its identity shortcut when the block has one. The fixed layers (stem, first block, and the
head = feature mix + pool + classifier) are timed the same way, so the predicted latency of a
path is ``sum(fixed) + sum(LUT of the chosen ops)`` and the expected latency of the supernet is
``sum(fixed) + sum_edges sum_ops p_op * LUT(op)`` (the zero op costs 0: its block is an identity).
All entries are timed in one `fruitnet.timing.interleaved_ms` call: ``search.latency_rounds``
rounds over every entry, each reading against the fixed first block (the median of
``search.latency_repeats`` runs per reading), so that a slow spell of a shared machine does not
bend the entries it meets (bench/LATENCY.md). `fruitnet.search.calibration` then fits the table
to whole nets.

Entries are cached as JSON under ``<paths.cache_dir>/latency/<device>-v2.json`` keyed by device
name (CPU model and thread count, or the GPU name), dtype, memory format, batch and shape, so a
second search on the same machine reuses them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fruitnet.files import write_json
from fruitnet.models.proxyless import (
    MobileInvertedResidualBlock,
    build_op,
)
from fruitnet.runtime import cpu_name
from fruitnet.search.runtimes import (
    runtime_device,
    runtime_tag,
    time_module,
    time_modules,
)
from fruitnet.search.space import op_config, parse_op
from fruitnet.search.supernet import ZERO, SearchConfigError, SuperNet

__all__ = ["LatencyTable", "build_latency_table", "check_target", "time_module"]

log = logging.getLogger(__name__)

LATENCY_LOSSES = ("mul_log", "add", "abs")


def lut_device_name(device: torch.device) -> str:
    """What the timings depend on: the GPU, or the CPU model and the intra-op thread count."""
    if device.type == "cuda":
        return f"cuda-{torch.cuda.get_device_name(device)}"
    return f"cpu-{cpu_name()}-{torch.get_num_threads()}threads"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:120]


def _cache_file(cache_dir: str | Path | None, device_name: str) -> Path | None:
    # v2: entries timed interleaved against a yardstick; a cache of the back-to-back timings
    # before it is left alone rather than mixed in
    return Path(cache_dir) / f"{_slug(device_name)}-v2.json" if cache_dir else None


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("entries", {}))
    except (OSError, json.JSONDecodeError, AttributeError):
        log.warning("latency cache %s unreadable; timing again", path)
        return {}


def _write_cache(path: Path, device: str, entries: dict[str, Any]) -> None:
    write_json(path, {"device": device, "entries": dict(sorted(entries.items()))}, indent=0)


class _Head(nn.Module):
    def __init__(self, net: SuperNet) -> None:
        super().__init__()
        self.feature_mix_layer = net.feature_mix_layer
        self.global_avg_pool = net.global_avg_pool
        self.classifier = net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_mix_layer is not None:
            x = self.feature_mix_layer(x)
        return self.classifier(torch.flatten(self.global_avg_pool(x), 1))


class LatencyTable:
    """The LUT of one supernet: ``fixed_ms`` (stem + first block + head) and ``edges[e][k]`` (ms
    of candidate k of edge e; 0 for the zero op). Plain data, so it travels in hparams."""

    def __init__(self, fixed_ms: dict[str, float], edges: list[list[float]], meta: dict[str, Any]):
        self.fixed_ms = dict(fixed_ms)
        self.edges = [list(map(float, e)) for e in edges]
        self.meta = dict(meta)

    @property
    def fixed_total(self) -> float:
        return float(sum(self.fixed_ms.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"fixed_ms": self.fixed_ms, "edges": self.edges, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        return cls(data["fixed_ms"], data["edges"], data.get("meta", {}))

    def path_ms(self, choices: list[int]) -> float:
        """Predicted latency of one path (one op index per edge)."""
        return self.fixed_total + sum(e[c] for e, c in zip(self.edges, choices, strict=True))

    def min_ms(self) -> float:
        return self.fixed_total + sum(min(e) for e in self.edges)

    def max_ms(self) -> float:
        return self.fixed_total + sum(max(e) for e in self.edges)

    def expected_ms(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """E[latency] = fixed + sum_e sum_k p_ek LUT_ek, differentiable in the probabilities."""
        total = probs[0].new_tensor(self.fixed_total)
        for p, table in zip(probs, self.edges, strict=True):
            total = total + (p * p.new_tensor(table)).sum()
        return total


def _block_key(info: dict[str, Any], name: str) -> str:
    op = parse_op(name)
    return (
        f"{op.kind.lower()}-in:{info['side']}x{info['side']}x{info['in']}-out:{info['out']}"
        f"-k{op.kernel}-e{op.expand}-s{info['stride']}-idskip:{int(info['residual'])}"
    )


@dataclass
class _CachedTimer:
    """Entries by cache key: a first pass over the table collects the keys not cached yet
    (``prefix`` holds what the key alone does not say: dtype, memory format, batch), then
    `time_pending` times all of them in one interleaved call and a second pass reads them."""

    cache: dict[str, Any]
    prefix: str
    pending: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = field(
        default_factory=dict
    )
    wanted: set[str] = field(default_factory=set)

    def __call__(self, key: str, make: Callable[[], nn.Module], shape: tuple[int, ...]) -> float:
        full = self.prefix + key
        self.wanted.add(full)
        if full in self.cache:
            return self.cache[full]
        self.pending.setdefault(full, (make, shape))
        return math.nan

    def time_pending(
        self,
        time_many: Callable[[list[tuple[nn.Module, tuple[int, ...]]]], list[float]],
        progress: Callable[[str], None] | None = None,
    ) -> int:
        keys = list(self.pending)
        if not keys:  # all cached: no session to build, no yardstick to time
            return 0
        times = time_many([(make(), shape) for make, shape in self.pending.values()])
        for key, ms in zip(keys, times, strict=True):
            self.cache[key] = ms
            if progress is not None:
                progress(f"{key.removeprefix(self.prefix)}: {ms:.3f} ms")
        self.pending.clear()
        return len(keys)


def _one_by_one(items: list[tuple[nn.Module, tuple[int, ...]]], **kw: Any) -> list[float]:
    return [time_module(module, shape, **kw) for module, shape in items]


def _first_block_shape(net: SuperNet, batch: int) -> tuple[int, ...]:
    return (batch, net.space.first_conv, net.first_block_side, net.first_block_side)


def _fixed_ms(net: SuperNet, timed: _CachedTimer, batch: int) -> dict[str, float]:
    """Stem, first block and head, each timed on a copy (the timer moves and converts it)."""
    s, first, space = net.input_size, net.first_block_side, net.space
    final, last = net.final_side, net.last_channels
    return {
        "first_conv": timed(
            f"first_conv-in:{s}x{s}x3-out:{space.first_conv}-k3-s2",
            lambda: copy.deepcopy(net.first_conv),
            (batch, 3, s, s),
        ),
        "first_block": timed(
            f"mbconv-in:{first}x{first}x{space.first_conv}-out:{space.first_block}-k3-e1-s1-idskip:0",
            lambda: copy.deepcopy(net.blocks[0]),
            _first_block_shape(net, batch),
        ),
        "head": timed(
            f"head-in:{final}x{final}x{last}-mix:{space.feature_mix}-classes:{net.num_classes}",
            lambda: copy.deepcopy(_Head(net)),
            (batch, last, final, final),
        ),
    }


def _candidate_block(info: dict[str, Any], name: str, bn: dict[str, float]) -> nn.Module:
    """One candidate as the finished net runs it: the op plus its identity shortcut, if any."""
    op = build_op(op_config(name, info["in"], info["out"], info["stride"]), bn)
    return MobileInvertedResidualBlock(op, nn.Identity() if info["residual"] else None)


def _edge_ms(net: SuperNet, timed: _CachedTimer, batch: int) -> list[list[float]]:
    edges: list[list[float]] = []
    for info in net.edge_info:
        shape = (batch, info["in"], info["side"], info["side"])
        edges.append(
            [
                0.0
                if name == ZERO
                else timed(
                    _block_key(info, name),
                    partial(_candidate_block, info, name, net.space.bn),
                    shape,
                )
                for name in info["names"]
            ]
        )
    return edges


def build_latency_table(
    net: SuperNet,
    *,
    device: torch.device,
    runtime: str = "torch",
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    interleave: bool = True,
) -> LatencyTable:
    """Time every fixed layer and every candidate op of ``net`` in ``runtime`` (cached per
    device, runtime, dtype and shape). ``interleave=False``: each entry's rounds back to back,
    no yardstick (how tables were timed before; bench/latency.py compares the two)."""
    device = runtime_device(runtime, device)
    dev_name = lut_device_name(device)
    cache_file = _cache_file(cache_dir, dev_name)
    dtype_name = str(dtype).replace("torch.", "")
    tag = runtime_tag(runtime)
    # Eager torch's keys carry no runtime tag (as before the runtimes; the file name is versioned)
    prefix = "" if runtime == "torch" else f"{tag}|"
    prefix += f"{dtype_name}|{'cl' if channels_last else 'cf'}|b{batch}|"
    prefix += "" if interleave else "one-by-one|"
    timing = dict(warmup=warmup, repeats=repeats, rounds=rounds)
    timed = _CachedTimer(_read_cache(cache_file), prefix)
    # A first pass collects what is not cached yet; the second, below, reads every entry
    _fixed_ms(net, timed, batch)
    _edge_ms(net, timed, batch)
    # Every missing entry in one interleaved call, each against the fixed first block: entries
    # timed in a slow spell of a shared CPU would otherwise read up to 1.5x high (the spell
    # outlasts one entry's rounds) and bend the sum of the ops that happened to meet it.
    yardstick = (copy.deepcopy(net.blocks[0]), _first_block_shape(net, batch))
    how = dict(device=device, dtype=dtype, channels_last=channels_last, runtime=runtime)
    if interleave:
        time_many = partial(time_modules, yardstick=yardstick, **how, **timing)
    else:
        time_many = partial(_one_by_one, **how, **timing)
    n_timed = timed.time_pending(time_many, progress=progress)
    fixed = _fixed_ms(net, timed, batch)
    edges = _edge_ms(net, timed, batch)
    if cache_file is not None and n_timed:
        _write_cache(cache_file, dev_name, {**_read_cache(cache_file), **timed.cache})
    log.info(
        "latency table on %s (batch %d, %s): %d entries timed, %d from cache %s",
        dev_name,
        batch,
        prefix.rstrip("|"),
        n_timed,
        len(timed.wanted) - n_timed,
        cache_file or "(no cache)",
    )
    meta = {"device": dev_name, "batch": batch, "dtype": dtype_name, "runtime": runtime}
    meta |= {"runtime_version": tag, "channels_last": channels_last, **timing}
    return LatencyTable(fixed, edges, meta)


def check_target(
    table: LatencyTable, target_ms: float, loss: str, key: str = "search.target_latency_ms"
) -> None:
    """Refuse a target the space cannot reach, or a loss form that cannot use it."""
    if loss not in LATENCY_LOSSES:
        raise SearchConfigError(
            f"search.latency_loss must be one of {', '.join(LATENCY_LOSSES)}, got {loss!r}"
        )
    if not target_ms or target_ms <= 0:
        raise SearchConfigError(f"{key} must be > 0, got {target_ms!r}")
    smallest = table.min_ms()
    if target_ms < smallest:
        where = f"{table.meta.get('runtime', 'torch')}, {table.meta.get('device')}"
        raise SearchConfigError(
            f"{key}: {target_ms:g} ms is below the smallest net in the space: "
            f"{smallest:.3f} ms ({where}, batch {table.meta.get('batch')}); "
            "raise the target or shrink the space (search.widths, depths, first_conv, feature_mix)"
        )
    if loss == "mul_log" and target_ms <= 1.0:
        raise SearchConfigError(
            f"search.latency_loss=mul_log uses log(E[latency]) / log(target) and needs a target "
            f"above 1 ms, got {target_ms:g}; use search.latency_loss=add"
        )


def latency_loss(
    ce: torch.Tensor,
    expected_ms: torch.Tensor,
    target_ms: float,
    loss: str,
    *,
    beta: float = 0.3,
    lam: float = 0.1,
) -> torch.Tensor:
    """The latency term of the architecture loss.

    ``mul_log``: CE * (log E[LAT] / log target)^beta, the paper's multiplicative form (official
    ``mul#log``). Note: the target only multiplies this loss by the constant
    ``(log target)^-beta``, and Adam's update is invariant to a constant gradient scale, so with
    the (Adam) architecture optimizer the target does not change the search; beta sets the
    accuracy/latency trade-off. ``add``: CE + lambda * (E[LAT] - target) / target, the additive
    form (official ``add#linear``): one-sided, it always rewards a faster net; the target sets the
    weight lambda / target. ``abs``: CE + lambda * |E[LAT] / target - 1|, two-sided (the absolute
    reward of TuNAS, Bender et al. 2020): it pulls E[LAT] toward the target from both sides.
    """
    if loss == "mul_log":
        return ce * (torch.log(expected_ms) / math.log(target_ms)) ** beta
    if loss == "add":
        return ce + lam * (expected_ms - target_ms) / target_ms
    if loss == "abs":
        return ce + lam * torch.abs(expected_ms / target_ms - 1.0)
    raise SearchConfigError(f"search.latency_loss must be one of {LATENCY_LOSSES}, got {loss!r}")
