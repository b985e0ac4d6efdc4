"""Do the chest nets read how sharp a film is? (issues 21 and 27)

    python bench/chest_sharpness.py --work logs/bench_search_v5 [--retrained logs/sharp]
    # -> bench/CHEST_SHARPNESS.md

1. How sharp each split's films are, per class: the mean absolute step between vertically
   neighbouring pixels of each film at the nets' input (128 px, grey, 0-1), over the films.
   chest_xray-small's training NORMAL films are sharper than its test NORMAL films, and
   PNEUMONIA films (opacities) are smoother than NORMAL ones in both.
2. Every chest retrain of a `python bench/search.py` run folder (each seed's best-validation
   checkpoint, fp32, its own cut) scored on the test films as they are, smoothed and sharpened
   by torchvision's `adjust_sharpness` (factor 0.5, 1.5, 2; 1 = as they are). A net that reads
   sharpness as a NORMAL cue calls more test films NORMAL the sharper they are made: its
   specificity rises with the factor. A diagnosis on the test films, not a result: nothing here
   chooses anything.
3. ``--retrained DIR``: the same nets retrained with the bench's recipe plus ``data.sharpness``
   (runs laid out as the bench's, ``DIR/chest_train_<net>_seed<k>``), scored as they are, beside
   the bench's rows: what a sharpness augmentation in training (`data.sharpness`) buys.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.chest_films import CLASSES, films, mean_std, p_pneumonia, retrains, score  # noqa: E402
from benchlib.common import REPO, find_dataset  # noqa: E402

from fruitnet.checkpoints import load_network  # noqa: E402
from fruitnet.data.transforms import image_spec  # noqa: E402
from fruitnet.predict import Predictor  # noqa: E402

FACTORS = (0.5, 1.0, 1.5, 2.0)
SIZE = 128  # the bench's chest input side
Scores = dict[str, list[dict[str, float]]]


def roughness(images: torch.Tensor) -> torch.Tensor:
    """Per uint8 image: the mean |step| between vertical neighbours of its grey levels (0-1)."""
    grey = F.rgb_to_grayscale(images).float() / 255
    return grey.diff(dim=-2).abs().mean((1, 2, 3))


def split_sharpness(data: Path) -> list[tuple[str, str, int, float]]:
    """(split, class, films, mean roughness) for every split of ``data`` that exists."""
    spec = (("crop", None), ("resize", SIZE), ("size", SIZE))
    rows = []
    for split in ("train", "val", "test"):
        if not (data / split).is_dir():
            continue
        images, y = films(data / split, spec)
        for k, name in enumerate(CLASSES):
            r = roughness(images[y == k])
            rows.append((split, name, len(r), r.mean().item()))
    return rows


def scored(ckpt: Path, test: Path, factors: tuple[float, ...], batch: int = 40) -> list[dict]:
    """``ckpt``'s `score` on the test films at each sharpness factor."""
    net = load_network(ckpt)
    pred = Predictor(net)
    cut = net.threshold if net.threshold is not None else 0.5
    images, y = films(test, tuple(sorted(image_spec(pred.preprocess).items())))
    out = []
    for factor in factors:
        moved = images if factor == 1.0 else F.adjust_sharpness(images, factor)
        batches = [pred.transform(moved[i : i + batch]) for i in range(0, len(moved), batch)]
        p1 = p_pneumonia(net, batches)
        out.append(score(p1, y, cut))
    return out


def overrides(run: Path) -> dict[str, str]:
    """A run's command-line overrides as Hydra recorded them, existing paths resolved."""
    record = run / ".hydra" / "overrides.yaml"
    if not record.is_file():
        raise SystemExit(f"{run}: no .hydra/overrides.yaml, so its recipe cannot be checked")
    out = {}
    for item in yaml.safe_load(record.read_text()):
        key, _, value = item.partition("=")
        out[key] = str(Path(value).resolve()) if Path(value).exists() else value
    return out


def check_twin(bench_run: Path, run: Path) -> str:
    """``run`` must be ``bench_run``'s command with data.sharpness added (its own cache folder
    aside); returns that data.sharpness."""
    own = ("paths.cache_dir", "data.sharpness")
    theirs, mine = overrides(bench_run), overrides(run)
    want, got = ({k: v for k, v in o.items() if k not in own} for o in (theirs, mine))
    if want != got or "data.sharpness" not in mine:
        diff = sorted(set(want.items()) ^ set(got.items())) or "no data.sharpness"
        raise SystemExit(f"{run} is not {bench_run}'s recipe plus data.sharpness: {diff}")
    return mine["data.sharpness"]


def cells(rows: list[dict[str, float]]) -> str:
    return " / ".join(
        mean_std([r[m] for r in rows], d) for m, d in (("acc", 1), ("spec", 1), ("auroc", 3))
    )


def render(
    sharp: list, bench: dict[str, Scores], retrained: dict[str, Scores], command: str
) -> str:
    lines = [
        "# Chest nets: do they read how sharp a film is?",
        "",
        f"Command: `{command}` (the module docstring says what each part does).",
        "",
        f"## How sharp the films are ({SIZE} px, grey)",
        "",
        "| split | class | films | mean |vertical step| |",
        "|---|---|---:|---:|",
        *(f"| {s} | {c} | {n} | {r:.4f} |" for s, c, n, r in sharp),
        "",
        "## The bench's retrains on the test films, smoothed and sharpened",
        "",
        "Accuracy % / specificity % / AUROC, mean ± std over the seeds, at the checkpoint's own"
        " cut, for each `adjust_sharpness` factor (1 = the films as they are).",
        "",
        "| net | seeds | " + " | ".join(f"factor {f:g}" for f in FACTORS) + " |",
        "|---|---:|" + "---|" * len(FACTORS),
    ]
    for net, seeds in bench.items():
        per = [cells([s[k] for s in seeds]) for k in range(len(FACTORS))]
        lines.append(f"| {net} | {len(seeds)} | " + " | ".join(per) + " |")
    lines += ["", *summary(bench)]
    if retrained:
        lines += [
            "",
            "## Retrained with `data.sharpness`",
            "",
            "Each run is the bench's retrain command for the same net and seed with"
            " `data.sharpness` added (checked against both runs' Hydra overrides), so a factor"
            " in [1 - s, 1 + s] is drawn per training image; scored on the test films as they"
            " are, beside the same net from the bench.",
            "",
            "| net | data.sharpness | seeds | bench: acc / spec / AUROC | retrained: acc / spec"
            " / AUROC |",
            "|---|---|---:|---|---|",
        ]
        one = FACTORS.index(1.0)
        for net, runs in retrained.items():
            base = cells([s[one] for s in bench[net]]) if net in bench else "n/a"
            values = ", ".join(sorted({r["sharpness"] for r in runs}))
            lines.append(f"| {net} | {values} | {len(runs)} | {base} | {cells(runs)} |")
        lines += ["", *retrained_summary(bench, retrained)]
    return "\n".join(lines) + "\n"


def summary(bench: dict[str, Scores]) -> list[str]:
    """How many nets gain specificity from the films being sharpened (factor 2 against 1)."""
    one, two = FACTORS.index(1.0), FACTORS.index(2.0)

    def spec(seeds: Scores, k: int) -> float:
        return statistics.mean(s[k]["spec"] for s in seeds)

    moves = {net: spec(seeds, two) - spec(seeds, one) for net, seeds in bench.items()}
    up = sum(d > 0 for d in moves.values())
    return [
        f"Sharpening the test films (factor 2) raises the specificity of {up} of {len(moves)}"
        f" nets ({min(moves.values()):+.1f} to {max(moves.values()):+.1f} points on the seed"
        " means): they take a sharp film for a NORMAL one."
    ]


def retrained_summary(bench: dict[str, Scores], retrained: dict[str, Scores]) -> list[str]:
    """How many retrained nets moved up against the bench, per metric, on the seed means."""
    one = FACTORS.index(1.0)
    nets = [net for net in retrained if net in bench]
    ups = {
        m: sum(
            statistics.mean(r[m] for r in retrained[net])
            > statistics.mean(s[one][m] for s in bench[net])
            for net in nets
        )
        for m in ("acc", "spec", "auroc")
    }
    return [
        f"Retrained with the augmentation, against the bench, on the seed means: accuracy up for"
        f" {ups['acc']} of {len(nets)} nets, specificity for {ups['spec']}, AUROC for"
        f" {ups['auroc']}."
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/chest_sharpness.py", description=__doc__)
    p.add_argument("--work", required=True, help="a bench/search.py run folder")
    p.add_argument("--retrained", metavar="DIR", help="chest_train_<net>_seed<k> runs")
    p.add_argument("--data", metavar="DIR", help="folder holding chest_xray-small")
    p.add_argument("--out", default=str(REPO / "bench" / "CHEST_SHARPNESS.md"))
    args = p.parse_args(argv)
    data = find_dataset("chest_xray-small", args.data)
    bench: dict[str, Scores] = defaultdict(list)
    for net, ckpt in retrains(Path(args.work)):
        bench[net].append(scored(ckpt, data / "test", FACTORS))
        print(ckpt.parent.parent.name, [round(s["spec"], 1) for s in bench[net][-1]])
    retrained: dict[str, Scores] = defaultdict(list)
    for net, ckpt in retrains(Path(args.retrained)) if args.retrained else []:
        value = check_twin(Path(args.work) / ckpt.parent.parent.name, ckpt.parent.parent)
        (row,) = scored(ckpt, data / "test", (1.0,))
        retrained[net].append({**row, "sharpness": value})
    command = f"python bench/chest_sharpness.py --work {Path(args.work).as_posix()}"
    if args.retrained:
        command += f" --retrained {Path(args.retrained).as_posix()}"
    Path(args.out).write_text(render(split_sharpness(data), bench, retrained, command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
