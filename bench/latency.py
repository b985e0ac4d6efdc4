"""How well the search's latency table predicts whole nets timed later, with the two ways of
timing it: one entry after the other (each entry's rounds back to back, as before) against
interleaved rounds read against a yardstick (`fruitnet.timing.interleaved_ms`) -> bench/LATENCY.md.

    python bench/latency.py                       # 4 trials per dataset -> bench/LATENCY.md
    python bench/latency.py --trials 2 --nets 4 --out logs/latency.md

What the search does, done ``--trials`` times per way and dataset shape (the default space,
`conf/search/default.yaml`, ONNX Runtime, batch 1, fp32, torch's thread count), the two ways
alternating which goes first: time the table (no cache), calibrate it on whole nets
(`fruitnet.search.calibration.calibrate`), then time ``--nets`` other random nets of the space one at
a time as the search times the nets it chooses (`fruitnet.search.measure.measure`: against the
calibration's yardstick in the interleaved way) and compare each with the table's prediction.
The same nets in every trial. The report's prose is bench/templates/latency/report.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import REPO, machine, shown_args, template  # noqa: E402

from fruitnet.files import write_text  # noqa: E402
from fruitnet.search.calibration import calibrate  # noqa: E402
from fruitnet.search.latency import build_latency_table  # noqa: E402
from fruitnet.search.measure import measure  # noqa: E402
from fruitnet.search.space import SearchSpace  # noqa: E402
from fruitnet.search.supernet import SuperNet  # noqa: E402

# The search bench's two datasets: their class counts and input sizes (bench/cases/search.yaml)
SHAPES = {"fruits-360-small": (95, 100), "chest_xray-small": (2, 128)}
WAYS = {"one by one": False, "interleaved, yardstick": True}
WITHIN_PCT = 15.0  # the search bench's goal (3)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=4, help="tables per way and dataset")
    p.add_argument("--nets", type=int, default=6, help="random nets timed after each table")
    p.add_argument("--out", default=str(REPO / "bench" / "LATENCY.md"))
    return p.parse_args()


def random_paths(net: SuperNet, count: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        [int(torch.randint(len(info["names"]), (1,), generator=gen)) for info in net.edge_info]
        for _ in range(count)
    ]


def trial(net: SuperNet, paths: list[list[int]], interleave: bool) -> dict:
    """One table, its calibration, and the nets timed after it: predicted and measured ms."""
    cfg = OmegaConf.load(REPO / "conf" / "search" / "default.yaml")
    timing = {
        "device": torch.device("cpu"),
        "warmup": int(cfg.latency_warmup),
        "repeats": int(cfg.latency_repeats),
        "rounds": int(cfg.latency_rounds),
    }
    start = time.perf_counter()
    table = build_latency_table(net, runtime="onnxruntime", interleave=interleave, **timing)
    nets = dict(n_random=int(cfg.latency_fit_nets), n_check=int(cfg.latency_check_nets))
    table = calibrate(table, net, interleave=interleave, **nets, **timing)
    seconds = time.perf_counter() - start
    rows = []
    for path in paths:
        arch = net.export_arch(path)
        ms = measure(arch, net.num_classes, net.input_size, table_meta=table.meta,
                     repeats=timing["repeats"], rounds=timing["rounds"])["measured_latency_ms"]  # fmt: skip
        rows.append({"predicted": table.path_ms(path), "measured": ms})
    return {"seconds": seconds, "error_pct": table.meta["calibration"]["error_pct"], "nets": rows}


def summary(trials: list[dict]) -> dict:
    misses = [
        100 * (r["predicted"] - r["measured"]) / r["measured"] for t in trials for r in t["nets"]
    ]
    return {
        "median_miss": statistics.median(abs(m) for m in misses),
        "max_miss": max(abs(m) for m in misses),
        "within": sum(abs(m) <= WITHIN_PCT for m in misses),
        "count": len(misses),
        "cal_error": statistics.median(t["error_pct"] for t in trials),
        "seconds": statistics.median(t["seconds"] for t in trials),
    }


def main() -> None:
    args = parse_args()
    space = SearchSpace.from_config(
        OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "search" / "default.yaml"))
    )
    load = [os.getloadavg()[0]]
    rows, details = [], []
    for dataset, (classes, size) in SHAPES.items():
        net = SuperNet(space, num_classes=classes, input_size=size)
        paths = random_paths(net, args.nets, seed=2026)
        runs: dict[str, list[dict]] = {way: [] for way in WAYS}
        for k in range(args.trials):
            order = list(WAYS) if k % 2 == 0 else list(WAYS)[::-1]
            for way in order:
                runs[way].append(trial(net, paths, WAYS[way]))
                print(f"[latency] {dataset} trial {k + 1} {way}: done", flush=True)
        load.append(os.getloadavg()[0])
        for way, trials in runs.items():
            s = summary(trials)
            rows.append(
                f"| {dataset} ({size} px, {classes} classes) | {way} | {s['median_miss']:.1f} | "
                f"{s['max_miss']:.1f} | {s['within']} of {s['count']} | {s['cal_error']:.1f} | "
                f"{s['seconds']:.0f} |"
            )
            for k, t in enumerate(trials):
                nets = " ".join(f"{r['predicted']:.2f}/{r['measured']:.2f}" for r in t["nets"])
                details.append(f"| {dataset} | {way} | {k + 1} | {nets} |")
    facts = machine()
    report = template(
        "latency/report",
        command=" ".join(["python bench/latency.py", *shown_args(sys.argv[1:])]),
        cpu=facts["cpu"], cores=facts["cores"], threads=facts["threads"], torch=facts["torch"],
        ort=__import__("onnxruntime").__version__, trials=args.trials, nets=args.nets,
        load=" / ".join(f"{x:.1f}" for x in load), rows="\n".join(rows),
        details="\n".join(details), within=f"{WITHIN_PCT:g}",
    )  # fmt: skip
    write_text(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
