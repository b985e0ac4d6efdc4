"""Architecture-search benchmark (issue 21): per dataset ONE `fruitnet.search` with several
latency targets (one supernet, one net per target), every searched net and every reference
retrained with one recipe and budget over several seeds, and all of them timed where a net runs
(ONNX Runtime, as exported) and in eager torch -> bench/SEARCH.md and a front plot per dataset.

    python bench/search.py                       # make bench-search: both datasets -> bench/SEARCH.md
    python bench/search.py --only chest          # one dataset -> logs/bench_search/<time>/SEARCH.md
    python bench/search.py --quick --out logs/SEARCH-quick.md
    python bench/search.py --only chest --retime 3  # how far the recorded nets' timings move

Per dataset, each command in its own process (printed in the report, paths as placeholders):
1. `python -m fruitnet.train` for every reference (random init), one recipe and the same epochs,
   --seeds seeds each, --jobs at a time: first, since nothing the search decides changes them;
2. the search space's latency range in ONNX Runtime on this CPU (the calibrated table the search
   then reads, timed afresh) and every reference's latency place the targets (at most --targets:
   just under each reference, the top of the space for references above it, one under them all);
3. `python -m fruitnet.search search.targets=[...]` under a time cap (held-out split from the
   training split for the architecture steps and the choice of each net; the test split unused);
4. the same retrain for every searched net;
5. batch-1 fp32 latency of every trained net in ORT and in eager torch, interleaved rounds.
Every finished command leaves a record in bench/runs/search/ (committed): `--resume` keeps it
when the run folder is gone, so a run longer than a session goes on in the next one.
Nothing is asserted: the report says PASS/MISS for each goal (bench/benchlib/search_goals.py).
The commands are in bench/cases/search.yaml, the report's prose in bench/templates/search/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import torch

# The bench's code (benchlib) lives beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import search_record  # noqa: E402
from benchlib import search_runs as sr  # noqa: E402
from benchlib.common import REPO, find_dataset, load_cases  # noqa: E402
from benchlib.search_goals import spread  # noqa: E402
from benchlib.search_md import front_figure, render  # noqa: E402

from fruitnet.files import write_text  # noqa: E402
from fruitnet.plots import save_figure  # noqa: E402

CASES = load_cases("search")
NAMES = [d["name"] for d in CASES["datasets"]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fruits", default=None, help="the fruits-360-small folder (default: shared)")
    p.add_argument("--chest", default=None, help="the chest_xray-small folder (default: shared)")
    p.add_argument("--only", choices=NAMES, action="append", help="these datasets only")
    p.add_argument("--out", default=None, help="the report (default bench/SEARCH.md; with "
                   "--only or --quick <work>/SEARCH.md: a partial run never replaces it)")  # fmt: skip
    p.add_argument("--work", default=None, help="run folder (default logs/bench_search/<time>)")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the script only")
    p.add_argument("--resume", action="store_true", help="keep every command that finished in "
                   "--work or has a record in --record (its results and minutes), run the rest")  # fmt: skip
    p.add_argument("--record", default=None, help="each finished command's record, what --resume "
                   "keeps when the run folder is gone (default bench/runs/search; --quick: "
                   "<work>/records)")  # fmt: skip
    p.add_argument("--status", action="store_true", help="print what the records hold (each "
                   "search, each net's seeds and accuracy) and stop")  # fmt: skip
    p.add_argument("--references-only", action="store_true", help="retrain the references of "
                   "every dataset and stop, no report: most of the bench's time, and independent "
                   "of this machine's timings; then --resume runs the rest")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="retrains per net (--quick: 1)")
    p.add_argument("--targets", type=int, default=6, help="latency targets per search (at most)")
    p.add_argument("--search-epochs", type=int, default=60)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument(
        "--search-minutes", type=float, default=15.0, help="trainer.max_time of a search"
    )
    p.add_argument("--retrain-epochs", type=int, default=None, help="epochs of every retrain "
                   "(default: the dataset's retrain_epochs in bench/cases/search.yaml)")  # fmt: skip
    p.add_argument("--retrain-minutes", type=float, default=30.0, help="trainer.max_time per "
                   "retrain: a safety cap; every net gets the same epochs, so a run resumed on "
                   "another machine keeps comparable results")  # fmt: skip
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="retrains at a time, each with its share "
                   "of the threads (the search and the timings run alone)")  # fmt: skip
    p.add_argument("--cache-dir", default=None, help="paths.cache_dir (latency table, images)")
    p.add_argument("--rounds", type=int, default=9, help="latency rounds over all nets (9: "
                   "what --retime showed steady, bench/README.md)")  # fmt: skip
    p.add_argument("--retime", type=int, default=0, metavar="CALLS", help="only time the "
                   "recorded searched nets of each dataset CALLS times, one interleaved call each "
                   "at --rounds and --repeats, ORT against the search's yardstick, and print "
                   "each call's readings: how far one final timing can move (no report)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=100, help="timed runs per net and round")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.search_epochs, args.warmup_epochs, args.retrain_epochs = 1, 2, 1, 1
        args.rounds, args.repeats, args.targets = 1, 10, min(args.targets, 2)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    args.work = Path(args.work or REPO / "logs" / "bench_search" / stamp).resolve()
    args.cache_dir = Path(args.cache_dir or args.work / "cache").resolve()
    default_record = args.work / "records" if args.quick else REPO / "bench" / "runs" / "search"
    args.record = Path(args.record or default_record).resolve()
    if args.status:
        return args
    partial = args.quick or (args.only and set(args.only) != set(NAMES))
    args.out = args.out or (args.work / "SEARCH.md" if partial else REPO / "bench" / "SEARCH.md")
    args.datasets = [d for d in CASES["datasets"] if not args.only or d["name"] in args.only]
    for d in args.datasets:
        d["retrain_epochs"] = args.retrain_epochs or int(d["retrain_epochs"])
        given = getattr(args, d["name"])
        d["path"] = str(find_dataset(d["folder"], given, splits=d["splits"]))
    return args


def references(args) -> list[dict]:
    return CASES["references"][: 2 if args.quick else None]


def bench_dataset(args, run: sr.Runner, ds: dict) -> dict | None:
    """One dataset: the search, the retrains, the measurements; its rows for the report."""
    data, size, name = ds["path"], int(ds["size"]), ds["name"]
    run.retrain_epochs = ds["retrain_epochs"]
    places = {args.work: "<run>", data: f"<{ds['folder']}>"}
    if not args.cache_dir.is_relative_to(args.work):
        places[args.cache_dir] = "<cache>"
    common = [*ds["overrides"], *run.filled("common", data)]
    common += CASES["quick"] if args.quick else []
    classes = sum(1 for p in (Path(data) / ds["splits"][0]).iterdir() if p.is_dir())

    def retrain(nets: list[dict], rerun: bool = False) -> None:
        jobs = [
            ("fruitnet.train", [*net["overrides"], *common, *run.filled("recipe", data, seed),
                                *ds.get("train_overrides", [])],
             args.work / f"{name}_train_{sr.slug(net['label'])}_seed{seed}", rerun)
            for net in nets for seed in range(args.seeds)
        ]  # fmt: skip
        done = iter(run.many(jobs, places, args.jobs))
        for net in nets:
            net["runs"] = [next(done) for _ in range(args.seeds)]

    # The references first: nothing the search decides changes them, so a run resumed later (in
    # another session, or after a change to the search) keeps them
    refs = [{**r, "searched": False, "target_ms": None} for r in references(args)]
    retrain(refs)
    if args.references_only:
        for net in refs:
            acc, std = spread([100 * float(r["test_acc"]) for r in net["runs"]])
            minutes = sum(r["bench_wall_s"] for r in net["runs"]) / 60 / len(net["runs"])
            print(f"{name}: {net['label']}: test acc {acc:.2f} ± {std:.2f} % over "
                  f"{len(net['runs'])} seeds, {minutes:.1f} min a retrain", flush=True)  # fmt: skip
        return None
    earlier = run.earlier(args.work / f"{name}_search", places) if args.resume else None
    placed = run.placement(name) if earlier is not None else None
    if placed is None:
        if earlier is None:
            # The search about to run reads the table timed now, alone, on this machine: never
            # one cached by an earlier session of this run folder (the cache is keyed by the CPU)
            shutil.rmtree(args.cache_dir / "latency", ignore_errors=True)
        lo, hi, yardstick = sr.space_range(classes, size, args.cache_dir)
        refs_ms = sr.reference_latencies(references(args), classes, size, rounds=args.rounds,
                                         repeats=args.repeats, yardstick=yardstick)  # fmt: skip
        targets = sr.place_targets(lo, hi, args.targets, list(refs_ms.values()))
        if earlier is not None:
            targets = list(earlier["targets_ms"])  # the searched nets' run folders follow them
        else:
            # what goal (3) scales the targets by: the references' latency when they were placed
            run.save_placement(name, {"range": [lo, hi], "refs_ms": refs_ms, "targets": targets,
                                      "yardstick": yardstick})  # fmt: skip
    else:
        (lo, hi), refs_ms, targets = placed["range"], placed["refs_ms"], placed["targets"]
        # placements written before the yardstick was kept: absolute timings, as then
        yardstick = placed.get("yardstick")
    print(f"{name}: space {lo:.3f} .. {hi:.3f} ms in ORT, references {refs_ms} -> "
          f"targets {targets}", flush=True)  # fmt: skip
    search_args = [*common, *run.filled("search", data)]
    search_args += [*ds.get("train_overrides", []), *(CASES["quick_search"] if args.quick else [])]
    search_args.append(f"search.targets=[{','.join(f'{t:g}' for t in targets)}]")
    search = run("fruitnet.search", search_args, args.work / f"{name}_search", places)
    searched = [
        {"label": f"searched {p['target_ms']:g} ms", "searched": True, "target_ms": p["target_ms"],
         "overrides": [*CASES["searched"], f"model.arch={p['arch_path']}"], "pick": p}
        for p in (search.get("front") or []) if search.get("searched")
    ]  # fmt: skip
    # a searched net's arch file is rewritten when its search ran again: its retrains follow
    retrain(searched, rerun=not search.get("bench_kept", False))
    nets = searched + refs
    specs = [net["runs"][0]["net"] for net in nets]
    # the search's yardstick, else (an earlier search's records) the one the targets were placed with
    yardstick = search.get("latency_yardstick") or yardstick
    times, yard_now = sr.measure_latency(specs, size, classes=classes, rounds=args.rounds,
                                         repeats=args.repeats, yardstick=yardstick)  # fmt: skip
    rows = []
    for net, spec, t in zip(nets, specs, times, strict=True):
        acc_mean, acc_std = spread([float(r["test_acc"]) for r in net["runs"]])
        aurocs = [r.get("test_auroc") for r in net["runs"]]
        auroc_mean, auroc_std = spread(aurocs) if None not in aurocs else (None, None)
        rows.append({
            "auroc_mean": auroc_mean, "auroc_std": auroc_std,
            "label": net["label"], "searched": net["searched"], "target_ms": net["target_ms"],
            "acc_mean": acc_mean, "acc_std": acc_std, "seeds": len(net["runs"]), **t,
            **sr.profile(spec, size),
            "search_ms": (net.get("pick") or {}).get("measured_latency_ms"),
            "search_min": search["bench_wall_s"] / 60 if net["searched"] else None,
            "retrain_min": sum(r["bench_wall_s"] for r in net["runs"]) / 60 / len(net["runs"]),
            "epochs": max(int(r.get("epochs") or 0) for r in net["runs"]),
        })  # fmt: skip
    return {"dataset": ds, "classes": classes, "range": (lo, hi), "refs_ms": refs_ms,
            "targets": targets, "search": search, "rows": rows, "yardstick": yardstick,
            "yardstick_now_ms": yard_now}  # fmt: skip


def retime(args, ds: dict) -> None:
    """`--retime`: the searched nets of ``ds``'s records (seed 0), timed ``args.retime`` times."""
    records = sorted(args.record.glob(f"{ds['name']}_train_searched_*_seed0.json"),
                     key=lambda p: float(p.name.split("_")[-2].removesuffix("ms")))  # fmt: skip
    specs = [json.loads(p.read_text())["net"] for p in records]
    search = json.loads((args.record / f"{ds['name']}_search.json").read_text())["results"]
    classes = int(specs[0]["num_classes"])
    labels = " ".join(p.name.split("_")[-2] for p in records)
    print(f"{ds['name']}: searched nets {labels}; {args.rounds} rounds x {args.repeats} runs")
    for call in range(args.retime):
        times, _ = sr.measure_latency(specs, int(ds["size"]), classes=classes, rounds=args.rounds,
                                      repeats=args.repeats, eager=False,
                                      yardstick=search.get("latency_yardstick"))  # fmt: skip
        print(f"  call {call + 1}: " + " ".join(f"{t['ort_ms']:.3f}" for t in times), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.status:
        print("\n".join(search_record.status(args.record)) or f"no records in {args.record}")
        return
    if args.retime:
        for ds in args.datasets:
            retime(args, ds)
        return
    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = sr.Runner(args, CASES)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for ds in args.datasets:
        res = bench_dataset(args, run, ds)
        if res is None:
            continue
        fig = front_figure(res["rows"], ds["folder"])
        res["png"] = save_figure(fig, out.with_name(f"search_front_{ds['name']}.png")).name
        results.append(res)
    total_min = (time.perf_counter() - t_start) / 60
    if args.references_only:
        print(f"references retrained in {args.work} ({total_min:.1f} min); the rest: "
              f"python bench/search.py --work {args.work} --resume")  # fmt: skip
        return
    write_text(out, render(args, results, run.commands, total_min))
    print(f"wrote {out} ({total_min:.1f} min)")


if __name__ == "__main__":
    main()
