"""The steps of bench/search.py: the commands it runs (each in its own process), the latency
targets placed across the search space, and the nets' latency and size measured after training."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from benchlib import search_record
from benchlib.common import REPO, run_logged, shown_args

RUNTIME = "onnxruntime"  # the search's default runtime (conf/search/default.yaml `runtime`)


def slug(label: str) -> str:
    """A net's run-folder name from its label ("searched 0.14 ms" -> searched_0.14ms,
    "MobileNetV3-Small" -> mobilenetv3-small): named, not numbered, so a resumed run whose search
    found another number of targets still finds each reference's runs."""
    return re.sub(r"[^a-z0-9.+-]+", "_", label.lower().replace(" ms", "ms")).strip("_")


def duration(minutes: float) -> str:
    """`trainer.max_time` for ``minutes`` (DD:HH:MM:SS)."""
    total = max(1, round(minutes * 60))
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


class Runner:
    """Runs the commands of this benchmark, each in its own process, and keeps them (as the report
    shows them, no path of this machine) in order."""

    def __init__(self, args, cases: dict[str, Any]) -> None:
        self.args, self.work, self.cases = args, args.work, cases
        # where each finished command's record goes (None: no records)
        self.record = getattr(args, "record", None)
        self.env = dict(os.environ)
        if args.threads:
            self.env["OMP_NUM_THREADS"] = str(args.threads)
        self.commands: list[str] = []
        self.retrain_epochs = 1  # the dataset's, set before its retrains

    def values(self, data: str, seed: int = 0) -> dict[str, Any]:
        a = self.args
        return {
            "data": data, "batch": a.batch, "cache_dir": a.cache_dir, "seed": seed,
            "search_epochs": a.search_epochs, "search_time": duration(a.search_minutes),
            "warmup": a.warmup_epochs, "retrain_epochs": self.retrain_epochs,
            "retrain_time": duration(a.retrain_minutes),
        }  # fmt: skip

    def filled(self, key: str, data: str, seed: int = 0) -> list[str]:
        return [str(x).format(**self.values(data, seed)) for x in self.cases[key]]

    def __call__(self, module: str, overrides: list[str], run_dir: Path, places,
                 env: dict[str, str] | None = None, rerun: bool = False) -> dict:  # fmt: skip
        """`python -m <module> <overrides> hydra.run.dir=<run_dir>`: its results.json, with the
        command's wall seconds as ``bench_wall_s`` and its net's hyper-parameters as ``net``.
        With --resume, a run that finished there with the same overrides, or whose record says
        so, is kept (``bench_kept``) unless ``rerun`` (its inputs changed)."""
        cmd = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
        self.commands.append("python " + shlex.join(shown_args(cmd[1:], places)))
        shown = shown_args(overrides, places)
        log_file = run_dir.with_name(f"{run_dir.name}.log")
        if self.args.resume and not rerun:
            done = finished(run_dir, overrides)
            if done is not None:
                print(f"= {run_dir.name}: finished in an earlier run, kept", flush=True)
                return self.recorded(run_dir, shown, done, places) | {"bench_kept": True}
            done = self.from_record(run_dir, shown, places)
            if done is not None:
                print(f"= {run_dir.name}: kept from its record", flush=True)
                return done | {"bench_kept": True}
        if run_dir.exists():
            # an earlier, changed command's folder: kept aside, so that its checkpoints do not
            # mix with this run's (Lightning would write beside them)
            k = 1
            while run_dir.with_name(f"{run_dir.name}.superseded{k}").exists():
                k += 1
            run_dir.rename(run_dir.with_name(f"{run_dir.name}.superseded{k}"))
        print(f"+ {shlex.join(cmd)}", flush=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        code, wall = run_logged(cmd, log_file, env or self.env)
        if code != 0:
            tail = log_file.read_text()[-4000:]
            raise SystemExit(f"command failed ({code}): {shlex.join(cmd)}\n{tail}")
        run_dir.with_name(f"{run_dir.name}.wall").write_text(f"{wall:.3f}\n")
        results = json.loads((run_dir / "results.json").read_text()) | {"bench_wall_s": wall}
        return self.recorded(run_dir, shown, results, places)

    def recorded(self, run_dir: Path, shown: list[str], results: dict, places) -> dict:
        """``results`` with its net's hyper-parameters, written to the record."""
        results = results | {"net": search_record.net_spec(results)}
        if self.record is not None:
            search_record.save(self.record, run_dir, shown, results, places)
        return results

    def from_record(self, run_dir: Path, shown: list[str] | None, places) -> dict | None:
        """The results of ``run_dir``'s command from its record (``shown`` None: any command)."""
        if self.record is None:
            return None
        return search_record.load(self.record, run_dir, shown, places)

    def placement(self, dataset: str) -> dict | None:
        """Where ``dataset``'s targets were placed before its search ran (the space's range, the
        references' latency then, the targets), as `save_placement` wrote it; None: not known."""
        file = None if self.record is None else self.record / f"{dataset}_placement.json"
        return json.loads(file.read_text()) if file is not None and file.is_file() else None

    def save_placement(self, dataset: str, placed: dict) -> None:
        if self.record is not None:
            self.record.mkdir(parents=True, exist_ok=True)
            text = json.dumps(placed, indent=1) + "\n"
            (self.record / f"{dataset}_placement.json").write_text(text)

    def earlier(self, run_dir: Path, places) -> dict | None:
        """What an earlier run of ``run_dir`` left (its folder, else its record), whatever its
        command: where a resumed search takes its targets from."""
        return finished(run_dir) or self.from_record(run_dir, None, places)

    def many(self, jobs: list[tuple[str, list[str], Path, bool]], places,
             parallel: int) -> list[dict]:  # fmt: skip
        """The commands ``jobs`` (module, overrides, run dir, rerun), ``parallel`` at a time, each with
        its share of the cores as threads (`OMP_NUM_THREADS`): on a 2-core CPU two one-thread
        trainings of small nets do more images per second than one two-thread training, whose
        threads wait for each other on small batches. Results in the order given."""
        if parallel <= 1:
            return [self(m, o, d, places, rerun=r) for m, o, d, r in jobs]
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, (self.args.threads or os.cpu_count() or 1) // parallel)
        env = {**self.env, "OMP_NUM_THREADS": str(threads)}
        with ThreadPoolExecutor(parallel) as pool:
            futures = [pool.submit(self, m, o, d, places, env, r) for m, o, d, r in jobs]
            return [f.result() for f in futures]


def finished(run_dir: Path, overrides: list[str] | None = None) -> dict | None:
    """A command of an earlier run of this benchmark that finished (--resume): its results.json
    and wall seconds, from ``<run>.wall``, or for runs older than that file, the log's last write
    minus the run folder's `.hydra/` (written at start-up, so interpreter start-up is left out).
    None when it did not finish, or when ``overrides`` differ from the ones Hydra recorded for it
    (the case changed since, so its result is not this command's)."""
    results = run_dir / "results.json"
    if not results.is_file():
        return None
    if overrides is not None:
        recorded = run_dir / ".hydra" / "overrides.yaml"
        if not recorded.is_file() or _yaml_list(recorded) != [str(o) for o in overrides]:
            return None
    wall_file = run_dir.with_name(f"{run_dir.name}.wall")
    if wall_file.is_file():
        wall = float(wall_file.read_text())
    else:
        log_file = run_dir.with_name(f"{run_dir.name}.log")
        wall = log_file.stat().st_mtime - (run_dir / ".hydra").stat().st_mtime
    return json.loads(results.read_text()) | {"bench_wall_s": wall}


def _yaml_list(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [str(x) for x in OmegaConf.load(path)]


def space_range(classes: int, size: int, cache_dir: Path) -> tuple[float, float, dict | None]:
    """The smallest and largest net of the default space in ORT on this CPU (batch 1), and the
    calibration's yardstick (``{"arch", "ms"}``): the same cached, calibrated table the search
    builds, so the search finds it in the cache and times its nets against the same yardstick."""
    from omegaconf import OmegaConf

    from fruitnet.search.calibration import calibrate
    from fruitnet.search.latency import build_latency_table
    from fruitnet.search.supernet import SearchSpace, SuperNet

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "default.yaml"))
    probe = SuperNet(SearchSpace.from_config(cfg), num_classes=classes, input_size=size)
    timing = {
        "device": torch.device("cpu"), "cache_dir": cache_dir / "latency",
        "warmup": int(cfg["latency_warmup"]), "repeats": int(cfg["latency_repeats"]),
        "rounds": int(cfg["latency_rounds"]),
    }  # fmt: skip
    table = build_latency_table(probe, batch=int(cfg["latency_batch"]), runtime=RUNTIME, **timing)
    table = calibrate(table, probe, n_random=int(cfg["latency_fit_nets"]),
                      n_check=int(cfg["latency_check_nets"]), **timing)  # fmt: skip
    return table.min_ms(), table.max_ms(), table.meta["calibration"].get("yardstick")


def place_targets(lo: float, hi: float, count: int, refs_ms: list[float]) -> list[float]:
    """Where the searched nets go: just under each reference's latency (goal 2 compares a
    reference with the searched nets at or under it), the references over the space's top at its
    top, plus one under them all for the front's small end; targets within 10 % of a lower one
    are dropped, then at most ``count`` are kept, spread over the range. 5 % inside each end of
    [lo, hi] (ms): the extreme nets are single paths the selection may not find; rounded up to
    0.01 ms."""
    if count < 1 or not 0 < lo <= hi:
        raise ValueError(f"cannot place {count} targets in {lo} .. {hi} ms")
    a, b = lo * 1.05, max(lo * 1.05, hi * 0.95)
    raw = sorted(min(max(0.95 * r, a), b) for r in refs_ms) or [math.sqrt(a * b)]
    raw.insert(0, max(a, math.sqrt(a * raw[0])))
    kept: list[float] = []
    for t in sorted(raw):
        if not kept or t > 1.1 * kept[-1]:
            kept.append(t)
    if len(kept) > count:
        # Keep both ends and the references' targets spread between them
        pick = {round(i * (len(kept) - 1) / max(1, count - 1)) for i in range(count)}
        kept = [t for i, t in enumerate(kept) if i in pick]
    return sorted({math.ceil(t * 100) / 100 for t in kept})


def profile(spec: dict[str, Any], size: int) -> dict[str, Any]:
    """Params, fp32 MiB and FLOPs of a trained net (batch 1, at the run's input size), rebuilt from
    its hyper-parameters (`search_record.net_spec`)."""
    from fruitnet.models.profile import count_params, flops, fp32_mib

    net, _ = search_record.build_net(spec)
    return {"params": count_params(net)[0], "fp32_mib": fp32_mib(net), "flops": flops(net, size)}


def measure_latency(specs: list[dict], size: int, *, classes: int, rounds: int, repeats: int,
                    yardstick: dict | None = None, eager: bool = True,
                    ) -> tuple[list[dict], float | None]:  # fmt: skip
    """Batch-1 fp32 latency of each trained net (rebuilt from its hyper-parameters with fresh
    weights: the time does not depend on them) in ORT (as exported: uint8 in, BN folded) and in
    eager torch (channels_last), torch's thread count: the median of ``repeats`` runs in
    ``rounds`` rounds interleaved over all nets (`fruitnet.timing.interleaved_ms`). With the
    search's ``yardstick`` (``{"arch", "ms"}``, `space_range`), every ORT reading counts against
    it and the ORT times are on the calibration's scale, the one the targets are in, however
    this machine's speed has moved since; also returned: the yardstick's own time now (ms).
    Without, the best round (a round slowed by another process reads high, never low).
    ``eager=False``: ORT only (``eager_ms`` None)."""
    from fruitnet.search.runtimes import time_modules, whole_net

    nets = [search_record.build_net(s) for s in specs]
    shape, cpu = (1, 3, size, size), torch.device("cpu")
    timing = {"device": cpu, "warmup": 5, "repeats": repeats, "rounds": rounds}
    yard_now = None
    items = [(whole_net(net, RUNTIME, pre), shape) for net, pre in nets]
    ort = {"runtime": RUNTIME, "input_dtype": torch.uint8}
    if yardstick is None:
        ort_ms = time_modules(items, **ort, **timing)
    else:
        yard = (whole_net(yardstick_net(yardstick, classes, size), RUNTIME, None),
                shape)  # fmt: skip
        # the yardstick also as an entry: its time now, on this call's own scale
        *now, yard_now = time_modules([*items, yard], yardstick=yard, **ort, **timing)
        ort_ms = [ms * float(yardstick["ms"]) / yard_now for ms in now]
    eager_ms = (time_modules([(net, shape) for net, _ in nets], runtime="torch", **timing)
                if eager else [None] * len(nets))  # fmt: skip
    return [{"ort_ms": o, "eager_ms": e} for o, e in zip(ort_ms, eager_ms, strict=True)], yard_now


def yardstick_net(yardstick: dict, classes: int, size: int):
    """The search's yardstick (a path of its space) as a finished net."""
    from fruitnet.models.proxyless import ProxylessNASNets

    return ProxylessNASNets(num_classes=classes, input_size=size, arch=yardstick["arch"]).eval()


def build_reference(overrides: list[str], classes: int, size: int):
    """A reference net (random init) from its `model=<name> model.<key>=<value>` overrides."""
    import yaml

    from fruitnet.models import create_model

    name, kwargs = None, {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key == "model":
            name = value
        elif key.startswith("model."):
            # model.kwargs.<k> reach the builder as <k>, as fruitnet.module passes model.kwargs
            kwargs[key.removeprefix("model.").removeprefix("kwargs.")] = yaml.safe_load(value)
    if name is None:
        raise ValueError(f"no model=<name> in {overrides}")
    return create_model(name, num_classes=classes, input_size=size, **kwargs).eval()


def reference_latencies(refs: list[dict], classes: int, size: int, *, rounds: int,
                        repeats: int, yardstick: dict | None = None) -> dict[str, float]:  # fmt: skip
    """Each reference's ORT latency (batch 1) before training, label -> ms: where the targets go
    (a net's time does not depend on its weights). All in one interleaved call, against the
    search's ``yardstick`` when given: on the scale of the calibration the search aims with."""
    from fruitnet.search.runtimes import time_whole_nets

    nets = [build_reference(r["overrides"], classes, size) for r in refs]
    yard = yardstick_net(yardstick, classes, size) if yardstick else None
    times = time_whole_nets(
        nets, size, runtime=RUNTIME, batch=1, device=torch.device("cpu"), yardstick=yard,
        yardstick_ms=float(yardstick["ms"]) if yardstick else None, warmup=5, repeats=repeats,
        rounds=rounds,
    )  # fmt: skip
    return {r["label"]: ms for r, ms in zip(refs, times, strict=True)}
