"""Where the chest nets' missing specificity sits: their BatchNorm statistics (issues 21 and 27).

    python bench/chest_bn_shift.py --work logs/bench_search_v5   # -> bench/CHEST_BN_SHIFT.md

Reads the chest_xray-small retrains of a `python bench/search.py` run folder (every searched net
and every reference, each seed's best-validation checkpoint) and scores each on the 120 test
films three ways, in fp32, at the checkpoint's own cut:
1. as trained: the BatchNorm running statistics the training left (crop_erase-augmented batches);
2. precise BN: the statistics re-estimated on the training films without augmentation (Wu and
   Johnson 2021, "Rethinking BatchNorm"); no test film is read;
3. test-time BN: the statistics re-estimated on the unlabelled test films themselves (AdaBN, Li
   et al. 2016; prediction-time BN, Nado et al. 2020): transductive, it reads the test pixels,
   never their labels. A diagnosis, not a result: it says whether the test films' shift lives in
   the normalisation statistics.
The basic CNN has no BatchNorm, so its three columns agree: it is the check that the script
changes nothing else. Nothing here trains or chooses anything.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.chest_films import films, mean_std, p_pneumonia, retrains, score  # noqa: E402
from benchlib.common import REPO, find_dataset  # noqa: E402

from fruitnet.batchnorm import adapt_batchnorm, batchnorm_layers  # noqa: E402
from fruitnet.checkpoints import load_network  # noqa: E402
from fruitnet.data.transforms import image_spec  # noqa: E402
from fruitnet.predict import Predictor  # noqa: E402

WAYS = ("as trained", "precise BN (training films)", "test-time BN (test films, unlabelled)")


def with_statistics_of(net: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """A copy of ``net`` whose BatchNorm statistics are those of ``batches`` (what eval and
    predict do with adapt_bn=true); ``net`` itself is left as it was."""
    adapted = copy.deepcopy(net)
    adapt_batchnorm(adapted, batches)
    return adapted


def three_ways(
    ckpt: Path, test: Path, train: Path, batch: int = 40
) -> tuple[int, list[dict[str, float]]]:
    """One checkpoint's BatchNorm layer count and its `score` on ``test``: as trained, precise
    BN, test-time BN."""
    net = load_network(ckpt)
    pred = Predictor(net)
    cut = net.threshold if net.threshold is not None else 0.5
    spec = tuple(sorted(image_spec(pred.preprocess).items()))

    def batches(split: Path) -> list[torch.Tensor]:
        images = films(split, spec)[0]
        return [pred.transform(images[i : i + batch]) for i in range(0, len(images), batch)]

    y = films(test, spec)[1]
    test_batches = batches(test)
    bn = len(batchnorm_layers(net))
    out = []
    for stats in (None, batches(train), test_batches):
        # No BatchNorm (the basic CNN): nothing to adapt, the same scores three times
        adapt = stats is not None and bn
        model = with_statistics_of(net, stats) if adapt else net
        out.append(score(p_pneumonia(model, test_batches), y, cut))
    return bn, out


def render(
    results: dict[str, list[list[dict[str, float]]]], bn: dict[str, int], command: str
) -> str:
    head = "| net | BatchNorm layers | seeds | " + " | ".join(
        f"{w}: acc % / spec % / AUROC / P(PNEUMONIA) of NORMAL films" for w in WAYS
    )
    lines = [
        "# Chest nets: where the missing specificity sits",
        "",
        f"Command: `{command}` (the module docstring says what each column does).",
        "",
        "Each seed's best-validation checkpoint, scored in fp32 eager torch at its own cut (0.5 for"
        " every bench retrain); the as-trained column can differ from bench/SEARCH.md by an image"
        " or two, since the retrains' own tests ran under `trainer.precision=auto` (bf16-mixed on"
        " a CPU with AVX-512 BF16). Mean ± std over the seeds.",
        "",
        head + " |",
        "|---|---:|---:|" + "---|" * len(WAYS),
    ]
    for net, seeds in results.items():
        cells = []
        for k in range(len(WAYS)):
            rows = [s[k] for s in seeds]
            cells.append(
                " / ".join(
                    mean_std([r[m] for r in rows], d)
                    for m, d in (("acc", 1), ("spec", 1), ("auroc", 3), ("p_normal", 2))
                )
            )
        lines.append(f"| {net} | {bn[net]} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", *summary(results, bn)]) + "\n"


def summary(results: dict[str, list[list[dict[str, float]]]], bn: dict[str, int]) -> list[str]:
    """Per way, over the BatchNorm nets: how the seed means moved against "as trained"."""
    bn_nets = {net: seeds for net, seeds in results.items() if bn[net]}
    lines = [f"Over the {len(bn_nets)} BatchNorm nets, the change of each net's seed mean:"]
    for k in (1, 2):
        moves = {
            m: [
                statistics.mean(s[k][m] for s in seeds) - statistics.mean(s[0][m] for s in seeds)
                for seeds in bn_nets.values()
            ]
            for m in ("acc", "spec", "auroc")
        }
        up = sum(d > 0 for d in moves["acc"])
        lines.append(
            f"- {WAYS[k]}: accuracy up for {up} of {len(bn_nets)} nets ({min(moves['acc']):+.1f} "
            f"to {max(moves['acc']):+.1f} points), specificity {min(moves['spec']):+.1f} to "
            f"{max(moves['spec']):+.1f} points, AUROC {min(moves['auroc']):+.3f} to "
            f"{max(moves['auroc']):+.3f}."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/chest_bn_shift.py", description=__doc__)
    p.add_argument("--work", required=True, help="a bench/search.py run folder")
    p.add_argument("--data", metavar="DIR", help="folder holding chest_xray-small")
    p.add_argument("--out", default=str(REPO / "bench" / "CHEST_BN_SHIFT.md"))
    args = p.parse_args(argv)
    data = find_dataset("chest_xray-small", args.data)
    results: dict[str, list] = defaultdict(list)
    bn: dict[str, int] = {}
    for net, ckpt in retrains(Path(args.work)):
        bn[net], ways = three_ways(ckpt, data / "test", data / "train")
        results[net].append(ways)
        print(
            ckpt.parent.parent.name,
            " | ".join(f"acc {w['acc']:.1f} spec {w['spec']:.1f}" for w in ways),
        )
    command = f"python bench/chest_bn_shift.py --work {Path(args.work).as_posix()}"
    Path(args.out).write_text(render(results, bn, command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
