"""Architecture-search benchmark: two `fruitnet.search` runs at two latency targets on this CPU,
each found net retrained with one recipe and compared with the basic CNN and ProxylessNAS-GPU
(random init) -> bench/SEARCH.md.

    python bench/search.py                     # make bench-search
    python bench/search.py --quick --out logs/SEARCH-quick.md

Steps, each command in its own process (printed in the report, paths as placeholders):
1. the latency table of the search space on this machine (the same cached table the searches
   use) gives the fastest and slowest net in the space; the two targets are fixed fractions of
   that range (--fractions), so they are reachable by construction;
2. `python -m fruitnet.search` at each target (held-out split carved from Training/; Test/ unused);
3. `python -m fruitnet.train` with one recipe for the basic CNN, ProxylessNAS-GPU (random init)
   and both found nets (`model=proxyless model.arch=<run>/arch.json`);
4. batch-1 latency of the four trained nets, measured here: the median of 50 runs, best of
   interleaved rounds (the statistic of the latency table).
Nothing is asserted: the report says PASS/MISS for each goal. The commands are in
bench/cases/search.yaml, the report's prose in bench/templates/search/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

# The bench's code (benchlib) lives beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import REPO, find_dataset, load_cases, run_logged  # noqa: E402
from benchlib.search_md import render, shown_command  # noqa: E402

from fruitnet.files import write_text  # noqa: E402
from fruitnet.models import create_model  # noqa: E402
from fruitnet.models.profile import count_params, flops, fp32_mib, latency_ms  # noqa: E402

CASES = load_cases("search")
INPUT_SIZE = 100


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data", default=None, help="the fruits-360-small folder (default: shared data)"
    )
    p.add_argument("--out", default=str(REPO / "bench" / "SEARCH.md"))
    p.add_argument("--work", default=None, help="run folder (default logs/bench_search/<time>)")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the script only")
    p.add_argument(
        "--fractions", default="0.25,0.65", help="targets as fractions of the space's range"
    )
    p.add_argument("--search-epochs", type=int, default=22)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--search-minutes", type=float, default=10.0, help="trainer.max_time per search")
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--latency-loss", default="abs")
    p.add_argument("--latency-lambda", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all)")
    p.add_argument(
        "--cache-dir", default=None, help="paths.cache_dir (latency table, decoded images)"
    )
    p.add_argument("--rounds", type=int, default=3, help="latency rounds over the four nets")
    args = p.parse_args()
    args.dataset = CASES["dataset"]
    args.data = str(find_dataset(args.dataset, args.data, splits=("Training", "Test")))
    if args.quick:
        args.search_epochs, args.warmup_epochs, args.retrain_epochs = 2, 1, 1
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    args.work = Path(args.work or REPO / "logs" / "bench_search" / stamp).resolve()
    args.cache_dir = Path(args.cache_dir or args.work / "cache").resolve()
    return args


class Runner:
    """Runs the commands of this benchmark, each in its own process, and keeps them (as the
    report shows them) in order."""

    def __init__(self, args) -> None:
        self.args, self.work = args, args.work
        self.env = dict(os.environ)
        if args.threads:
            self.env["OMP_NUM_THREADS"] = str(args.threads)
        self.commands: list[str] = []
        values = {
            "data": args.data, "batch": args.batch, "cache_dir": args.cache_dir,
            "search_epochs": args.search_epochs, "search_minutes": int(args.search_minutes),
            "warmup": args.warmup_epochs, "latency_loss": args.latency_loss,
            "latency_lambda": args.latency_lambda, "retrain_epochs": args.retrain_epochs,
        }  # fmt: skip
        lists = ("common", "quick", "search", "latency_loss", "recipe")
        self.filled = {k: [x.format(**values) for x in CASES[k]] for k in lists}
        self.common = self.filled["common"] + (self.filled["quick"] if args.quick else [])

    def __call__(self, module: str, overrides: list[str], run_dir: Path) -> tuple[dict, float]:
        """`python -m <module> <common> <overrides> hydra.run.dir=<run_dir>`: its results.json
        and wall seconds."""
        cmd = [sys.executable, "-m", module, *self.common, *overrides, f"hydra.run.dir={run_dir}"]
        self.commands.append(shown_command(cmd[1:], self.work, self.args.data, self.args.cache_dir))
        print("+", shlex.join(cmd), flush=True)
        log_file = run_dir.with_name(f"{run_dir.name}.log")
        code, wall = run_logged(cmd, log_file, self.env)
        if code != 0:
            tail = log_file.read_text()[-4000:]
            raise SystemExit(f"command failed ({code}): {shlex.join(cmd)}\n{tail}")
        return json.loads((run_dir / "results.json").read_text()), wall


def num_classes(args) -> int:
    return sum(1 for p in (Path(args.data) / "Training").iterdir() if p.is_dir())


def latency_targets(args) -> tuple[list[float], tuple[float, float]]:
    """The space's latency range on this machine (the cached, calibrated table the searches
    use) and the two targets at --fractions of it."""
    from omegaconf import OmegaConf

    from fruitnet.search.latency import build_latency_table, calibrate
    from fruitnet.search.supernet import SearchSpace, SuperNet

    space_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "default.yaml"))
    space = SearchSpace.from_config(space_cfg)
    probe = SuperNet(space, num_classes=num_classes(args), input_size=INPUT_SIZE)
    cpu, cache = torch.device("cpu"), args.cache_dir / "latency"
    # the runtime the searches time in (conf/search/default.yaml `runtime`), or their targets
    # would be read against another runtime's table
    runtime = str(space_cfg.get("runtime", "torch"))
    table = build_latency_table(probe, device=cpu, batch=1, cache_dir=cache, runtime=runtime)
    # calibrated on whole nets, as each search does (conf/search/default.yaml latency_calibrate)
    table = calibrate(table, probe, device=cpu, cache_dir=cache)
    lo, hi = table.min_ms(), table.max_ms()
    targets = [round(lo + float(f) * (hi - lo), 2) for f in args.fractions.split(",")]
    print(f"space latency {lo:.3f} .. {hi:.3f} ms -> targets {targets}", flush=True)
    return targets, (lo, hi)


def run_searches(args, run: Runner, targets: list[float]) -> list[dict]:
    searches = []
    for target in targets:
        run_dir = args.work / f"search_{target:g}ms"
        overrides = [
            *run.filled["search"],
            f"search.target_latency_ms={target}",
            *run.filled["latency_loss"],
        ]
        res, wall = run("fruitnet.search", overrides, run_dir)
        res["wall_s"] = wall
        searches.append(res)
        png = run_dir / "edge_probs.png"
        if png.is_file() and not args.quick:
            shutil.copy(png, REPO / "bench" / f"search_edge_probs_{target:g}ms.png")
    return searches


def retrain(args, run: Runner, searches: list[dict]) -> list[dict]:
    """The two reference nets and the found ones, with one recipe."""
    nets = [(n["label"], n["overrides"], None, None) for n in CASES["nets"]]
    for res in searches:
        arch = res["arch_path"]
        label = f"searched, target {res['target_latency_ms']:g} ms"
        nets.append((label, [*CASES["searched"], f"model.arch={arch}"], arch, res))
    rows = []
    for i, (label, model_args, arch, res) in enumerate(nets):
        out, wall = run(
            "fruitnet.train", [*model_args, *run.filled["recipe"]], args.work / f"train_{i}"
        )
        rows.append({"label": label, "arch": arch, "search": res, "train": out, "train_s": wall})
    return rows


def measure_latency(args, rows: list[dict], classes: int) -> None:
    """Batch-1 latency of the trained nets on this CPU, interleaved rounds; size figures too."""
    models = []
    for row in rows:
        kwargs = {"arch": json.loads(Path(row["arch"]).read_text())} if row["arch"] else {}
        model = create_model(
            row["train"]["model"], num_classes=classes, input_size=INPUT_SIZE, **kwargs
        ).eval()
        models.append(model)
        row["params"] = count_params(model)[0]
        row["fp32_mib"] = fp32_mib(model)
        row["flops"] = flops(model, INPUT_SIZE)
    per_round: list[list[float]] = [[] for _ in models]
    iters = 10 if args.quick else 50
    for _ in range(1 if args.quick else args.rounds):
        for j, model in enumerate(models):
            per_round[j].append(
                latency_ms(model, INPUT_SIZE, 1, "cpu", warmup=10, iters=iters, channels_last=True)
            )
    for row, times in zip(rows, per_round, strict=True):
        row["latency_ms"] = min(times)  # best round, as the latency table counts its timings


def main() -> None:
    args = parse_args()
    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Runner(args)
    targets, span = latency_targets(args)
    searches = run_searches(args, run, targets)
    rows = retrain(args, run, searches)
    measure_latency(args, rows, num_classes(args))
    total_min = (time.perf_counter() - t_start) / 60
    text = render(args, rows, searches, targets, span, run.commands, total_min, args.work)
    write_text(args.out, text)
    print(f"wrote {args.out} ({total_min:.1f} min)")


if __name__ == "__main__":
    main()
