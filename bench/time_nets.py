"""Trained nets side by side: batch-1 fp32 latency in ONNX Runtime (as `python -m fruitnet.export`
exports: uint8 input, BatchNorm folded) and in eager torch, interleaved over all nets as
bench/search.py's final timing does, with params and FLOPs -> a markdown table on stdout.

    python bench/time_nets.py bench/runs/search/fruits_train_resnet-18_seed0.json logs/<run>

Each NET is a record of bench/search.py (bench/runs/search/<run>.json) or the run folder of a
`python -m fruitnet.train` (its results.json names the best checkpoint). Every net is rebuilt from
its hyper-parameters with fresh weights: neither the time nor the size depends on them, so a
record whose checkpoint is gone times as well as a run of this machine. Run it alone on the
machine: another job on the cores moves the times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The bench's code (benchlib) lives beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import search_record  # noqa: E402
from benchlib import search_runs as sr  # noqa: E402
from benchlib.common import machine_text  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("nets", nargs="+", type=Path, help="records (.json) or train run folders")
    p.add_argument("--rounds", type=int, default=9, help="rounds over all nets (as search.py)")
    p.add_argument("--repeats", type=int, default=100, help="timed runs per net and round")
    return p.parse_args(argv)


def net_spec(path: Path) -> dict:
    """The hyper-parameters that rebuild the net of a record or of a train run folder."""
    if path.is_file():
        spec = json.loads(path.read_text()).get("net")
    else:
        results = path / "results.json"
        if not results.is_file():
            raise SystemExit(f"{path}: neither a record (.json) nor a run folder with results.json")
        spec = search_record.net_spec(json.loads(results.read_text()))
    if not spec:
        raise SystemExit(
            f"{path}: holds no trained net (a search's record or run, or no checkpoint)"
        )
    return spec


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    specs = [net_spec(p) for p in args.nets]
    sizes = {int(s["input_size"]) for s in specs}
    if len(sizes) != 1:
        raise SystemExit(f"the nets take different input sizes {sorted(sizes)}: time them apart")
    (size,) = sizes
    # no yardstick (that is a search's): absolute times, the best round
    times, _ = sr.measure_latency(specs, size, classes=int(specs[0]["num_classes"]),
                                  rounds=args.rounds, repeats=args.repeats)  # fmt: skip
    rows = [{"net": p.stem if p.is_file() else p.name, **t, **sr.profile(s, size)}
            for p, s, t in zip(args.nets, specs, times, strict=True)]  # fmt: skip
    import onnxruntime
    import torch

    print(f"{machine_text()}, batch 1, {size} px, fp32, {torch.get_num_threads()} threads, "
          f"ONNX Runtime {onnxruntime.__version__}, torch {torch.__version__}; the best of "
          f"{args.rounds} interleaved rounds, each the median of {args.repeats} runs")  # fmt: skip
    print("\n| net | ONNX Runtime ms | eager torch ms | params | MFLOPs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['net']} | {r['ort_ms']:.2f} | {r['eager_ms']:.2f} | {r['params']:,} | "
              f"{r['flops'] / 1e6:.1f} |")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
