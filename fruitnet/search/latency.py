"""Latency lookup table: every candidate op timed at its input shape on the run's own device.

Each entry is the median forward time (ms per batch of ``search.latency_batch`` images, eval mode,
no grad, after warm-up runs; the best of ``search.latency_rounds`` such medians) of one block exactly as the finished network runs it: the MBConv op
plus its identity shortcut when the block has one. The fixed layers (stem, first block, and the
head = feature mix + pool + classifier) are timed the same way, so the predicted latency of a
path is ``sum(fixed) + sum(LUT of the chosen ops)`` and the expected latency of the supernet is
``sum(fixed) + sum_edges sum_ops p_op * LUT(op)`` (the zero op costs 0: its block is an identity).

Entries are cached as JSON under ``<paths.cache_dir>/latency/<device>.json`` keyed by device name
(CPU model and thread count, or the GPU name), dtype, memory format, batch and shape, so a second
search on the same machine reuses them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import statistics
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
    ProxylessNASNets,
    build_op,
)
from fruitnet.runtime import cpu_name
from fruitnet.search.runtimes import (
    make_timer,
    runtime_device,
    runtime_tag,
    time_module,
    time_whole_net,
)
from fruitnet.search.space import op_config, parse_op
from fruitnet.search.supernet import ZERO, SearchConfigError, SuperNet

__all__ = ["LatencyTable", "build_latency_table", "calibrate", "check_target", "time_module"]

log = logging.getLogger(__name__)

LATENCY_LOSSES = ("mul_log", "add", "abs")
# A prediction of a whole net further off than this (in %) is warned about
CALIBRATION_WARN_PCT = 15.0


def lut_device_name(device: torch.device) -> str:
    """What the timings depend on: the GPU, or the CPU model and the intra-op thread count."""
    if device.type == "cuda":
        return f"cuda-{torch.cuda.get_device_name(device)}"
    return f"cpu-{cpu_name()}-{torch.get_num_threads()}threads"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:120]


def _cache_file(cache_dir: str | Path | None, device_name: str) -> Path | None:
    return Path(cache_dir) / f"{_slug(device_name)}.json" if cache_dir else None


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
    """Times a module once per cache key; ``prefix`` holds what the key alone does not say
    (dtype, memory format, batch)."""

    cache: dict[str, Any]
    prefix: str
    time: Callable[[nn.Module, tuple[int, ...]], float]
    progress: Callable[[str], None] | None = None
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)

    def __call__(self, key: str, make: Callable[[], nn.Module], shape: tuple[int, ...]) -> float:
        full = self.prefix + key
        if full in self.cache:
            self.hits += 1
            return self.cache[full]
        self.misses += 1
        ms = self.time(make(), shape)
        self.cache[full] = ms
        if self.progress is not None:
            self.progress(f"{key}: {ms:.3f} ms")
        return ms


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
            (batch, space.first_conv, first, first),
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
) -> LatencyTable:
    """Time every fixed layer and every candidate op of ``net`` in ``runtime`` (cached per
    device, runtime, dtype and shape)."""
    device = runtime_device(runtime, device)
    dev_name = lut_device_name(device)
    cache_file = _cache_file(cache_dir, dev_name)
    dtype_name = str(dtype).replace("torch.", "")
    tag = runtime_tag(runtime)
    # Eager torch keeps the key it always had, so existing caches stay valid.
    prefix = "" if runtime == "torch" else f"{tag}|"
    prefix += f"{dtype_name}|{'cl' if channels_last else 'cf'}|b{batch}|"
    timing = dict(warmup=warmup, repeats=repeats, rounds=rounds)
    time = make_timer(runtime, device=device, dtype=dtype, channels_last=channels_last, **timing)
    timed = _CachedTimer(_read_cache(cache_file), prefix, time, progress)
    fixed = _fixed_ms(net, timed, batch)
    edges = _edge_ms(net, timed, batch)
    if cache_file is not None and timed.misses:
        _write_cache(cache_file, dev_name, {**_read_cache(cache_file), **timed.cache})
    log.info(
        "latency table on %s (batch %d, %s): %d entries timed, %d from cache %s",
        dev_name,
        batch,
        prefix.rstrip("|"),
        timed.misses,
        timed.hits,
        cache_file or "(no cache)",
    )
    meta = {"device": dev_name, "batch": batch, "dtype": dtype_name, "runtime": runtime}
    meta |= {"runtime_version": tag, "channels_last": channels_last, **timing}
    return LatencyTable(fixed, edges, meta)


def _calibration_paths(table: LatencyTable, n_random: int, seed: int) -> list[list[int]]:
    """The fastest and the slowest path by the table, and ``n_random`` random ones."""
    gen = torch.Generator().manual_seed(seed)
    paths = [
        [min(range(len(e)), key=e.__getitem__) for e in table.edges],
        [max(range(len(e)), key=e.__getitem__) for e in table.edges],
    ]
    for _ in range(n_random):
        paths.append([int(torch.randint(len(e), (1,), generator=gen)) for e in table.edges])
    return paths


def _calibration_key(table: LatencyTable, paths: list[list[int]], net: SuperNet) -> str:
    # Keyed by the raw table (itself cached per device, dtype and shape) and the paths, so every
    # search over this space on this machine shares one fit.
    data = [table.fixed_ms, table.edges, paths, net.num_classes, net.input_size]
    return "calibration|" + hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Theil-Sen ``(scale, offset)`` of measured on table ms: the median of the pairwise slopes,
    then the median offset; scale 1 when it is undefined. Least squares let one net timed in a
    slow spell of a shared CPU (1.7x its table sum) tilt the line: on a 2-core EPYC it put the
    space's fastest net at 0.75 ms where the same calibration measured it at 0.36 ms, under the
    basic CNN, and so hid from the search the very corner the first goal needs."""
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(points)
        for x2, y2 in points[i + 1 :]
        if abs(x2 - x1) > 1e-9
    ]
    scale = statistics.median(slopes) if slopes else 1.0
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    return scale, statistics.median(y - scale * x for x, y in points)


def _rescaled(
    table: LatencyTable, scale: float, offset: float, points: list[tuple[float, float]]
) -> LatencyTable:
    fixed = {k: v * scale for k, v in table.fixed_ms.items()}
    fixed["overhead"] = offset
    edges = [[v * scale for v in row] for row in table.edges]
    calibration = {
        "scale": scale,
        "offset_ms": offset,
        "points": [{"table_ms": x, "measured_ms": y} for x, y in points],
        "raw": {"fixed_ms": table.fixed_ms, "edges": table.edges},
    }
    return LatencyTable(fixed, edges, {**table.meta, "calibration": calibration})


def calibrate(
    table: LatencyTable,
    net: SuperNet,
    *,
    device: torch.device,
    channels_last: bool = True,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    n_random: int = 2,
    n_check: int = 2,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    preprocess: dict[str, Any] | None = None,
) -> LatencyTable:
    """Fit ``measured = scale * table + offset`` on whole finished nets, apply it, and check it.

    Ops timed alone run with their weights and input hot in cache and without the calls between
    blocks, so the sum of the table is not the whole network's time. A few paths (the fastest,
    the slowest and ``n_random`` random ones) are built as finished nets
    (`fruitnet.models.proxyless.ProxylessNASNets`) and timed whole in the table's runtime and
    batch (in ORT: the export's model, uint8 in); the Theil-Sen line through (table sum,
    measured) rescales every entry and adds the offset as a fixed ``overhead`` entry. Then
    ``n_check`` other random nets, not in the fit, are predicted and measured: the largest miss in
    % is ``meta["calibration"]["error_pct"]`` (a warning above `CALIBRATION_WARN_PCT`). The raw
    table and the fit are kept in ``meta["calibration"]``; the points are cached with the table.
    """
    runtime = str(table.meta.get("runtime", "torch"))
    paths = _calibration_paths(table, n_random + n_check, seed)
    key = _calibration_key(table, paths, net) + ("" if runtime == "torch" else f"|{runtime}")
    device_name = str(table.meta.get("device"))
    cache_file = _cache_file(cache_dir, device_name)
    cached = _read_cache(cache_file).get(key)
    points = [tuple(p) for p in cached] if cached else []
    timing = dict(warmup=warmup, repeats=repeats, rounds=rounds, channels_last=channels_last)
    for path in [] if points else paths:
        model = ProxylessNASNets(
            num_classes=net.num_classes, input_size=net.input_size, arch=net.export_arch(path)
        )
        batch = int(table.meta.get("batch", 1))
        kw = dict(runtime=runtime, batch=batch, device=device, preprocess=preprocess)
        points.append((table.path_ms(path), time_whole_net(model, net.input_size, **kw, **timing)))
    if cache_file is not None and not cached:
        _write_cache(cache_file, device_name, {**_read_cache(cache_file), key: points})
    fit, held_out = points[: len(points) - n_check], points[len(points) - n_check :]
    scale, offset = _fit_line(fit)
    check = [
        {"predicted_ms": scale * x + offset, "measured_ms": y, "miss_pct": 100 * (scale * x + offset - y) / y}
        for x, y in held_out
    ]  # fmt: skip
    error = max((abs(c["miss_pct"]) for c in check), default=None)
    log.info(
        "latency table (%s) calibrated on %d whole nets: measured = %.3f x table %+.3f ms "
        "(points %s); %s",
        runtime,
        len(fit),
        scale,
        offset,
        ", ".join(f"{x:.2f}->{y:.2f}" for x, y in fit),
        f"calibration error {error:.1f} % on {len(check)} other nets" if check else "not checked",
    )
    if error is not None and error > CALIBRATION_WARN_PCT:
        log.warning(
            "the latency table misses whole nets by up to %.1f %% in %s on this machine (over "
            "%g %%): predictions of this search are that far off; rerun on an idle machine or "
            "raise search.latency_repeats / latency_rounds",
            error,
            runtime,
            CALIBRATION_WARN_PCT,
        )
    out = _rescaled(table, scale, offset, fit)
    out.meta["calibration"] |= {"check": check, "error_pct": error}
    return out


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
