"""Finished nets timed as the run's latency table was (runtime, batch, device): the search's
choice of each target's net and the numbers it reports. On the CPU in a fresh process
(`NetTimer`): the search's own process, after training, is not the state the table was timed in.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import torch

from fruitnet.models.profile import count_params, flops, fp32_mib, state_dict_mib
from fruitnet.models.proxyless import ProxylessNASNets
from fruitnet.search.runtimes import time_whole_nets


def measure(
    arch: dict[str, Any],
    num_classes: int,
    input_size: int,
    *,
    table_meta: dict[str, Any],
    preprocess: dict[str, Any] | None = None,
    warmup: int = 10,
    repeats: int = 30,
    rounds: int = 3,
) -> dict[str, Any]:
    """Params, MiB, FLOPs and the measured latency of the finished net built from ``arch``: ms
    per batch in the table's runtime, batch and device (fp32, eval), timed as the table was and
    against the calibration's yardstick when it has one (`fruitnet.search.calibration.calibrate`)."""
    net = ProxylessNASNets(num_classes=num_classes, input_size=input_size, arch=arch)
    total, _ = count_params(net)
    stats = {
        "params": total,
        "fp32_mib": fp32_mib(net),
        "weights_mb": state_dict_mib(net),
        "flops": flops(net, input_size),
    }
    device = "cuda" if str(table_meta.get("device")).startswith("cuda") else "cpu"
    # Against the calibration's yardstick, when the table has one: the time this net would have
    # taken when the table was calibrated, which is what its target means, however the machine's
    # speed has moved since (the search's training, other jobs)
    yard = (table_meta.get("calibration") or {}).get("yardstick")
    build = partial(ProxylessNASNets, num_classes=num_classes, input_size=input_size)
    (stats["measured_latency_ms"],) = time_whole_nets(
        [net],
        input_size,
        runtime=str(table_meta.get("runtime", "torch")),
        batch=int(table_meta.get("batch", 1)),
        device=torch.device(device),
        preprocess=preprocess,
        yardstick=build(arch=yard["arch"]) if yard else None,
        yardstick_ms=float(yard["ms"]) if yard else None,
        channels_last=bool(table_meta.get("channels_last", True)),
        warmup=warmup,
        repeats=repeats,
        rounds=rounds,
    )
    return stats


def _measure_with_threads(threads: int, arch: dict[str, Any], kwargs: dict[str, Any]) -> dict:
    torch.set_num_threads(threads)
    return measure(arch, **kwargs)


class NetTimer:
    """``stats(arch)`` / ``ms(arch)`` of finished nets, timed like the run's table.

    ``fresh`` (CPU tables): in one spawned worker process that only times, with the run's thread
    count. Timed in the search's own process after the supernet's training, small nets read 2-3x
    their calibrated time (a 0.14 ms net at 0.28-0.38 ms in ONNX Runtime on a 2-core CPU, while
    the calibration nets, timed in the same process before training, missed by 2 %): the choice
    of each target's net then aimed at the wrong time. The table itself is timed before training,
    in a process like a fresh one."""

    def __init__(self, module: Any, search_cfg: dict[str, Any], *, fresh: bool) -> None:
        meta = module.table.meta
        self.kwargs = {
            "num_classes": module.net.num_classes,
            "input_size": module.net.input_size,
            "table_meta": meta,
            "preprocess": module.hparams.get("preprocess"),
            "repeats": int(search_cfg.get("latency_repeats", 30)),
            "rounds": int(search_cfg.get("latency_rounds", 3)),
        }
        on_cpu = not str(meta.get("device", "cpu")).startswith("cuda")
        self.pool = None
        if fresh and on_cpu:
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(1, mp_context=context)

    def stats(self, arch: dict[str, Any]) -> dict[str, Any]:
        if self.pool is None:
            return measure(arch, **self.kwargs)
        job = self.pool.submit(_measure_with_threads, torch.get_num_threads(), arch, self.kwargs)
        return job.result()

    def ms(self, arch: dict[str, Any]) -> float:
        return float(self.stats(arch)["measured_latency_ms"])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def __enter__(self) -> NetTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
