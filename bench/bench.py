"""fruitnet speed benchmark: fruitnet.train against the study's plain fp32 PyTorch loop.

    python bench/bench.py                        # full run -> bench/RESULTS.md (make bench)
    python bench/bench.py --quick                # tiny settings: checks the script end to end
    python bench/bench.py --device cpu --out logs/bench-cpu.md

On one machine, in one run, it measures:
0. end to end (the headline): the default `python -m fruitnet.train model=<m> data=fruits ...`
   command from the JPEG files against the study's script (`bench/study_loop.py`: ImageFolder +
   PIL, 2 workers, fp32, a plain loop with validation), each in a fresh process, interleaved
   rounds: wall time per epoch (validation and checkpoints included) and time to first step;
1. train-step images/s per model on pre-made random tensors (so it times the step, not data):
   (a) the study's plain fp32 loop and network (basic CNN: conv, ReLU, pool), contiguous tensors;
   (b) the same loop with fruitnet's network and settings (channels_last, the autocast dtype that
       `trainer.precision=auto` picks on this machine, fruitnet's Adam config: fused);
   (c) fruitnet.train itself: the Hydra-composed ClassifierModule, callbacks, logger and Trainer,
       fed uint8 batches through fruitnet's own on_after_batch_transfer;
2. data-loading images/s: torchvision ImageFolder + PIL + ToTensor (the study) against
   fruitnet's decoded-image cache (data.cache=true, cache already built, second epoch);
3. accuracy: the basic CNN trained by fruitnet.train in fp32 and in bf16, same seed and epochs.
Then it writes a markdown table with PASS/MISS per target (nothing is asserted). The cases and
targets are in bench/cases/bench.yaml, the code in bench/benchlib/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

# The bench's code (benchlib) and the study's script (study_loop.py) live beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.accuracy import measure_accuracy  # noqa: E402
from benchlib.common import REPO, find_dataset  # noqa: E402
from benchlib.compose import DATASET, accelerator, quiet_lightning  # noqa: E402
from benchlib.e2e import measure_e2e  # noqa: E402
from benchlib.loading import measure_data  # noqa: E402
from benchlib.results_md import render  # noqa: E402
from benchlib.step_runs import measure_steps, variant_main  # noqa: E402

from fruitnet.files import write_text  # noqa: E402
from fruitnet.runtime import resolve_precision  # noqa: E402


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: one variant
    p.add_argument("--variant-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    p.add_argument("--data", default=None, help=f"the {DATASET} folder (default: shared data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--models", nargs="*", default=None, help="subset of cnn proxyless resnet50")
    p.add_argument("--only", nargs="*", choices=["e2e", "steps", "data", "accuracy"], default=None)
    p.add_argument("--e2e-epochs", type=int, default=2, help="epochs of each end-to-end run")
    p.add_argument(
        "--e2e-rounds",
        type=int,
        default=3,
        help="end-to-end rounds (study loop and fruitnet.train interleaved); medians are kept",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="target seconds per measurement")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps, not timed")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of (a), (b), (c) per model, interleaved; the best window of each is kept "
        "(a shared machine's speed drifts by 10-20 %% between windows)",
    )
    p.add_argument("--min-steps", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=8, help="epochs of each accuracy run")
    p.add_argument("--acc-seeds", type=int, default=1, help="accuracy runs per precision")
    p.add_argument("--data-batch", type=int, default=128)
    p.add_argument("--workers", default="auto", help='DataLoader workers for both paths ("auto")')
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's, one per core); 1 on a busy machine, "
        "where OpenMP threads that wait on each other slow every step down many times",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="fruitnet cache root (default: $FRUITNET_CACHE or <repo>/.cache/fruitnet, "
        "the same as fruitnet.train)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.min_steps, args.rounds = 0.0, 1, 2, 1
        args.e2e_rounds = 1
    env_cache = os.environ.get("FRUITNET_CACHE")
    args.cache_root = args.cache_dir or (Path(env_cache) if env_cache else REPO / ".cache/fruitnet")
    return args


def main(argv=None) -> None:
    args = get_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        variant_main(json.loads(args.variant), args.variant_out)
        return
    started = time.perf_counter()
    root = find_dataset(DATASET, args.data, splits=("Training", "Test"))
    want = set(args.only or ["e2e", "steps", "data", "accuracy"])
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    precision = str(resolve_precision("auto", accelerator(device)))
    quiet_lightning()
    print(f"bench: {DATASET} at {root}; device {device}; precision auto -> {precision}", flush=True)

    with tempfile.TemporaryDirectory(prefix="fruitnet-bench-") as tmp:
        work = Path(tmp)
        e2e = measure_e2e(args, root, device, work) if "e2e" in want else None
        steps = measure_steps(args, device, precision, work) if "steps" in want else None
        data = measure_data(args, root, device) if "data" in want else None
        acc = measure_accuracy(args, root, device, work) if "accuracy" in want else None

    text = render(args, device, precision, e2e, steps, data, acc, time.perf_counter() - started)
    write_text(args.out, text)
    print(f"\n{text}\nbench: wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
