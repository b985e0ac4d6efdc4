"""The steps of bench/search.py: the commands it runs (each in its own process), the latency
targets placed across the search space, and the nets' latency and size measured after training."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from benchlib.common import REPO, run_logged, shown_args

RUNTIME = "onnxruntime"  # the search's default runtime (conf/search/default.yaml `runtime`)


def duration(minutes: float) -> str:
    """`trainer.max_time` for ``minutes`` (DD:HH:MM:SS)."""
    total = max(1, round(minutes * 60))
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


class Runner:
    """Runs the commands of this benchmark, each in its own process, and keeps them (as the report
    shows them, no path of this machine) in order."""

    def __init__(self, args, cases: dict[str, Any]) -> None:
        self.args, self.work, self.cases = args, args.work, cases
        self.env = dict(os.environ)
        if args.threads:
            self.env["OMP_NUM_THREADS"] = str(args.threads)
        self.commands: list[str] = []

    def values(self, data: str, seed: int = 0) -> dict[str, Any]:
        a = self.args
        return {
            "data": data, "batch": a.batch, "cache_dir": a.cache_dir, "seed": seed,
            "search_epochs": a.search_epochs, "search_time": duration(a.search_minutes),
            "warmup": a.warmup_epochs, "retrain_epochs": a.retrain_epochs,
            "retrain_time": duration(a.retrain_minutes),
        }  # fmt: skip

    def filled(self, key: str, data: str, seed: int = 0) -> list[str]:
        return [str(x).format(**self.values(data, seed)) for x in self.cases[key]]

    def __call__(self, module: str, overrides: list[str], run_dir: Path, places) -> dict:
        """`python -m <module> <overrides> hydra.run.dir=<run_dir>`: its results.json, with the
        command's wall seconds as ``bench_wall_s``."""
        cmd = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
        self.commands.append("python " + shlex.join(shown_args(cmd[1:], places)))
        print("+", shlex.join(cmd), flush=True)
        log_file = run_dir.with_name(f"{run_dir.name}.log")
        code, wall = run_logged(cmd, log_file, self.env)
        if code != 0:
            tail = log_file.read_text()[-4000:]
            raise SystemExit(f"command failed ({code}): {shlex.join(cmd)}\n{tail}")
        return json.loads((run_dir / "results.json").read_text()) | {"bench_wall_s": wall}


def space_range(classes: int, size: int, cache_dir: Path) -> tuple[float, float]:
    """The smallest and largest net of the default space in ORT on this CPU (batch 1): the same
    cached, calibrated table the search builds, so the search finds it in the cache."""
    from omegaconf import OmegaConf

    from fruitnet.search.latency import build_latency_table, calibrate
    from fruitnet.search.supernet import SearchSpace, SuperNet

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "default.yaml"))
    probe = SuperNet(SearchSpace.from_config(cfg), num_classes=classes, input_size=size)
    timing = {
        "device": torch.device("cpu"), "cache_dir": cache_dir / "latency",
        "warmup": int(cfg["latency_warmup"]), "repeats": int(cfg["latency_repeats"]),
        "rounds": int(cfg["latency_rounds"]),
    }  # fmt: skip
    table = build_latency_table(probe, batch=int(cfg["latency_batch"]), runtime=RUNTIME, **timing)
    table = calibrate(table, probe, n_check=int(cfg["latency_check_nets"]), **timing)
    return table.min_ms(), table.max_ms()


def place_targets(lo: float, hi: float, count: int, below: float | None) -> list[float]:
    """``count`` targets spread geometrically over the space's range [lo, hi] (ms), each rounded
    up to 0.01 ms so it stays reachable; when the space reaches under ``below`` (the basic CNN's
    latency) and no target is at or under it, the lowest target moves to just under it."""
    if count < 1 or not 0 < lo <= hi:
        raise ValueError(f"cannot place {count} targets in {lo} .. {hi} ms")
    # 5 % inside each end: the extreme nets are single paths the selection may not find
    a, b = lo * 1.05, max(lo * 1.05, hi * 0.95)
    if count == 1:
        raw = [math.sqrt(a * b)]
    else:
        raw = [a * (b / a) ** (i / (count - 1)) for i in range(count)]
    if below is not None and lo < below and min(raw) > below:
        raw[0] = max(a, 0.95 * below) if a < below else (lo + below) / 2
    return sorted({math.ceil(t * 100) / 100 for t in raw})


def whole_net(ckpt: str):
    """A trained checkpoint's network and its preprocessing (the export's input pipeline)."""
    from fruitnet.checkpoints import load_network

    classifier = load_network(ckpt)
    return classifier.net.eval(), classifier.hparams["preprocess"]


def profile(ckpt: str, size: int) -> dict[str, Any]:
    """Params, fp32 MiB and FLOPs of a trained net (batch 1, at the run's input size)."""
    from fruitnet.models.profile import count_params, flops, fp32_mib

    net, _ = whole_net(ckpt)
    return {"params": count_params(net)[0], "fp32_mib": fp32_mib(net), "flops": flops(net, size)}


def measure_latency(ckpts: list[str], size: int, *, rounds: int, repeats: int) -> list[dict]:
    """Batch-1 fp32 latency of each net in ORT (as exported: uint8 in, BN folded) and in eager
    torch (channels_last), torch's thread count: the median of ``repeats`` runs, the best of
    ``rounds`` rounds interleaved over all nets (a round slowed by another process reads high,
    never low)."""
    from fruitnet.search.runtimes import time_whole_net

    nets = [whole_net(c) for c in ckpts]
    times: list[dict[str, list[float]]] = [{RUNTIME: [], "torch": []} for _ in nets]
    for _ in range(rounds):
        for (net, pre), seen in zip(nets, times, strict=True):
            for runtime in seen:
                seen[runtime].append(
                    time_whole_net(net, size, runtime=runtime, batch=1, device=torch.device("cpu"),
                                   preprocess=pre, warmup=5, repeats=repeats, rounds=1)
                )  # fmt: skip
    return [{"ort_ms": min(t[RUNTIME]), "eager_ms": min(t["torch"])} for t in times]


def cnn_latency(classes: int, size: int, *, rounds: int, repeats: int) -> float:
    """The basic CNN's ORT latency (batch 1) before any training: where the lowest target goes."""
    from fruitnet.models import create_model
    from fruitnet.search.runtimes import time_whole_net

    net = create_model("cnn", num_classes=classes, input_size=size).eval()
    timing = {"warmup": 5, "repeats": repeats, "rounds": rounds}
    return time_whole_net(net, size, runtime=RUNTIME, batch=1, device=torch.device("cpu"), **timing)
