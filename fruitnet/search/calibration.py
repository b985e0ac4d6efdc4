"""Calibration of the latency table on whole nets: ops timed alone are not a whole network's
time (hot caches, no calls between blocks, the runtime's per-call overhead), so a few finished
nets are timed and a line through (table sum, measured) rescales the table (`calibrate`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fruitnet.models.proxyless import ProxylessNASNets
from fruitnet.search.latency import LatencyTable, _cache_file, _read_cache, _write_cache
from fruitnet.search.runtimes import time_whole_net, time_whole_nets
from fruitnet.search.supernet import SuperNet

__all__ = ["CALIBRATION_WARN_PCT", "calibrate"]

log = logging.getLogger(__name__)

# A prediction of a whole net further off than this (in %) is warned about
CALIBRATION_WARN_PCT = 15.0


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
    """``(scale, offset)`` of measured on table ms with the least sum of relative misses
    ``|scale * x + offset - y| / y``: a least-absolute-deviation line, which passes through two
    of the points, so every pair's line is tried. Scale 1 through the median offset when no pair
    gives a rising line.

    Relative, because a target's tolerance is: a Theil-Sen line (medians of absolute slopes and
    offsets) followed the nets in the middle of the space, where most points lie, and put the
    fastest net 20 % over its time (0.62 against 0.51 ms, fruits-360-small's calibration on a
    2-core EPYC), so the search's smallest target came out 23 % under. Least absolute, because
    least squares let one net timed in a slow spell (1.7x its table sum) tilt the line: it put
    the space's fastest net at 0.75 ms where it measured 0.36 ms."""
    best: tuple[float, float, float] | None = None
    for i, (x1, y1) in enumerate(points):
        for x2, y2 in points[i + 1 :]:
            if abs(x2 - x1) <= 1e-9 or (scale := (y2 - y1) / (x2 - x1)) <= 0:
                continue
            offset = y1 - scale * x1
            cost = sum(abs(scale * x + offset - y) / y for x, y in points)
            if best is None or cost < best[0]:
                best = (cost, scale, offset)
    if best is None:
        return 1.0, statistics.median(y - x for x, y in points)
    return best[1], best[2]


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


def _time_paths(
    table: LatencyTable,
    net: SuperNet,
    paths: list[list[int]],
    yardstick: list[int],
    *,
    device: torch.device,
    preprocess: dict[str, Any] | None,
    interleave: bool,
    **timing: Any,
) -> list[float]:
    """Each path as a finished net, timed whole in the table's runtime and batch: all in one
    interleaved call against the ``yardstick`` path (the machine's speed moves by more than the
    fit's tolerance between nets timed one after the other), or one by one."""
    build = partial(ProxylessNASNets, num_classes=net.num_classes, input_size=net.input_size)
    nets = [build(arch=net.export_arch(p)) for p in paths]
    runtime = str(table.meta.get("runtime", "torch"))
    kw = dict(runtime=runtime, batch=int(table.meta.get("batch", 1)), device=device)
    kw |= dict(preprocess=preprocess, **timing)
    if not interleave:
        return [time_whole_net(n, net.input_size, **kw) for n in nets]
    yard = build(arch=net.export_arch(yardstick))
    return time_whole_nets(nets, net.input_size, yardstick=yard, **kw)


def _log_fit(
    runtime: str,
    fit: list[tuple[float, float]],
    scale: float,
    offset: float,
    check: list[dict[str, float]],
    error: float | None,
) -> None:
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


def calibrate(
    table: LatencyTable,
    net: SuperNet,
    *,
    device: torch.device,
    channels_last: bool = True,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    n_random: int = 6,
    n_check: int = 2,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    preprocess: dict[str, Any] | None = None,
    interleave: bool = True,
) -> LatencyTable:
    """Fit ``measured = scale * table + offset`` on whole finished nets, apply it, and check it.

    Ops timed alone run with their weights and input hot in cache and without the calls between
    blocks, so the sum of the table is not the whole network's time. A few paths (the fastest,
    the slowest and ``n_random`` random ones) are built as finished nets
    (`fruitnet.models.proxyless.ProxylessNASNets`) and timed whole in the table's runtime and
    batch (in ORT: the export's model, uint8 in); the line of least relative misses through (table sum,
    measured) rescales every entry and adds the offset as a fixed ``overhead`` entry. Then
    ``n_check`` other random nets, not in the fit, are predicted and measured: the largest miss in
    % is ``meta["calibration"]["error_pct"]`` (a warning above `CALIBRATION_WARN_PCT`). The raw
    table and the fit are kept in ``meta["calibration"]``; the points are cached with the table.
    The nets are timed in one `fruitnet.timing.interleaved_ms` call against the first random net
    (the yardstick); its arch and time are ``meta["calibration"]["yardstick"]``, against which
    the search times the nets it chooses later (`fruitnet.search.measure`), so that those times
    are on the calibration's scale whatever the machine's speed has done since.
    ``interleave=False``: each net's rounds back to back, no yardstick (as before).
    """
    runtime = str(table.meta.get("runtime", "torch"))
    paths = _calibration_paths(table, n_random + n_check, seed)
    yi = min(2, len(paths) - 1)  # the yardstick: the first random path (itself one of the nets)
    key = _calibration_key(table, paths, net) + ("" if runtime == "torch" else f"|{runtime}")
    key += "" if interleave else "|one-by-one"
    device_name = str(table.meta.get("device"))
    cache_file = _cache_file(cache_dir, device_name)
    cached = _read_cache(cache_file).get(key)
    if cached:
        points, yard_ms = [tuple(p) for p in cached["points"]], cached["yardstick_ms"]
    else:
        timing = dict(warmup=warmup, repeats=repeats, rounds=rounds, channels_last=channels_last)
        kw = dict(device=device, preprocess=preprocess, interleave=interleave)
        measured = _time_paths(table, net, paths, paths[yi], **kw, **timing)
        points = [(table.path_ms(p), ms) for p, ms in zip(paths, measured, strict=True)]
        yard_ms = measured[yi]
    if cache_file is not None and not cached:
        entry = {"points": points, "yardstick_ms": yard_ms}
        _write_cache(cache_file, device_name, {**_read_cache(cache_file), key: entry})
    fit, held_out = points[: len(points) - n_check], points[len(points) - n_check :]
    scale, offset = _fit_line(fit)
    check = [
        {"predicted_ms": scale * x + offset, "measured_ms": y, "miss_pct": 100 * (scale * x + offset - y) / y}
        for x, y in held_out
    ]  # fmt: skip
    error = max((abs(c["miss_pct"]) for c in check), default=None)
    _log_fit(runtime, fit, scale, offset, check, error)
    out = _rescaled(table, scale, offset, fit)
    yardstick = {"arch": net.export_arch(paths[yi]), "ms": yard_ms} if interleave else None
    out.meta["calibration"] |= {"check": check, "error_pct": error, "yardstick": yardstick}
    return out
