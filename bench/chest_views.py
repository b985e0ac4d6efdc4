"""Test-time views of the chest recipe: does zooming in, or averaging crops, carry to the test films?

    python bench/chest_views.py --work logs/chest_views   # -> bench/CHEST_VIEWS.md

best_chest trains on random crops of 70-100 % of each film's side stretched back to 128 px
(`data.augment=crop_erase`), so at training time a film fills the input about 1/0.85 larger than at
test time: the train-test scale gap of Touvron et al. 2019 (FixRes). Three ways of closing it at
test time, with no retraining:
1. centre zoom z: the centre z of the decoded 128 px input stretched back to 128 px;
2. decode zoom z: the film decoded at 128/z px and its centre 128 px kept (`data.crop_fraction=z`
   at test time only), which keeps the detail that stretching a decoded input blurs away;
3. five crops: the mean P(PNEUMONIA) of torchvision's `five_crop` at 90 % of the side (the four
   corners and the centre), each stretched back to 128 px.
Trains best_chest as bench/RECIPES.md's chest comparison does (60 s of fit, `data=folder`), on the
held-out copy of `bench/chest_heldout.py` (seeds 0-5; its test/ is other patients' training films)
and on chest_xray-small itself (seeds 0-2; the 120 test films), one run at a time, skipping runs
already done; then scores each run's best-validation checkpoint under every view, in fp32. The cut
on P(PNEUMONIA) is chosen per view on that run's own validation split with the same view
(`choose_threshold`, as `model.threshold=auto` does), so no test film chooses anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.chest_films import (  # noqa: E402
    bench_parser,
    decoded,
    load_module,
    mean_std,
    p_pneumonia,
    run_datamodule,
    score,
    write_report,
)
from benchlib.common import find_dataset, isa_flags, machine  # noqa: E402
from chest_heldout import build_copy, run_dir_of, run_or_reuse  # noqa: E402

from fruitnet.module import choose_threshold  # noqa: E402

View = Callable[[torch.Tensor], list[torch.Tensor]]


def centre_zoom(z: float) -> View:
    def views(x: torch.Tensor) -> list[torch.Tensor]:
        size = list(x.shape[-2:])
        return [F.resize(F.center_crop(x, [round(s * z) for s in size]), size)]

    return views


def five_crops(z: float) -> View:
    def views(x: torch.Tensor) -> list[torch.Tensor]:
        size = list(x.shape[-2:])
        return [F.resize(c, size) for c in F.five_crop(x, [round(s * z) for s in size])]

    return views


# name -> (the views of a decoded batch, data.crop_fraction the films are decoded with)
VIEWS: dict[str, tuple[View, float]] = {
    "as trained": (lambda x: [x], 1.0),
    "centre zoom 0.95": (centre_zoom(0.95), 1.0),
    "centre zoom 0.9": (centre_zoom(0.9), 1.0),
    "centre zoom 0.85": (centre_zoom(0.85), 1.0),
    "centre zoom 0.8": (centre_zoom(0.8), 1.0),
    "decode zoom 0.9": (lambda x: [x], 0.9),
    "five crops 0.9": (five_crops(0.9), 1.0),
}


def view_probs(module, dm, loader, views: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean P(PNEUMONIA) over ``views`` of every film of ``loader``, and the labels."""
    batches, labels = decoded(dm, loader)
    per_view = zip(*(views(b) for b in batches), strict=True)  # view k of every batch, in order
    probs = torch.stack([p_pneumonia(module, list(vb)) for vb in per_view]).mean(0)
    return probs, labels


def score_run(run: Path) -> dict[str, dict[str, float]]:
    """One run's test-split scores under every view, each at the cut its validation split chose."""
    module = load_module(run)
    datamodules = {}  # data.crop_fraction -> the run's datamodule decoding at it
    out = {}
    for name, (views, fraction) in VIEWS.items():
        if fraction not in datamodules:
            datamodules[fraction] = run_datamodule(run, crop_fraction=fraction)
        dm = datamodules[fraction]
        cut = choose_threshold(*view_probs(module, dm, dm.val_dataloader(), views))
        out[name] = score(*view_probs(module, dm, dm.test_dataloader(), views), cut)
    return out


def render(tables: dict[str, list[dict]], command: str, trained: str) -> str:
    def cells(seeds: list[dict], name: str) -> str:
        up = sum(s[name]["acc"] > s["as trained"]["acc"] for s in seeds)
        same = sum(s[name]["acc"] == s["as trained"]["acc"] for s in seeds)
        metrics = " / ".join(
            mean_std([s[name][m] for s in seeds], d) for m, d in (("acc", 1), ("spec", 1))
        )
        auroc = mean_std([s[name]["auroc"] for s in seeds], 3)
        return f"{metrics} / {auroc} | {up} up, {same} level"

    head = " | ".join(
        f"{k} ({len(v)} seeds): acc % / spec % / AUROC | seeds" for k, v in tables.items()
    )
    lines = [
        "# Chest recipe: test-time views (zoom, five crops)",
        "",
        f"Command: `{command}` (the module docstring says what each view does).",
        "",
        trained,
        "",
        "best_chest's best-validation checkpoints, fp32 eager torch; each view's cut chosen on the"
        " run's own validation split under that view. Mean ± std (sample) over the seeds; `seeds`"
        " counts the seeds whose accuracy the view raised or left level against `as trained`.",
        "",
        f"| view | {head} |",
        "|---|" + "---|---|" * len(tables),
    ]
    for name in VIEWS:
        lines.append(f"| {name} | " + " | ".join(cells(v, name) for v in tables.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("chest_views.py", __doc__, "CHEST_VIEWS.md", "runs, the held-out copy, cache")
    p.add_argument("--heldout-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--test-seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    source = find_dataset("chest_xray-small", args.data)
    heldout = work / "heldout"
    build_copy(source, heldout / "chest_xray-heldout")
    splits = {
        "held-out films": (heldout / "chest_xray-heldout", heldout, args.heldout_seeds),
        "test films": (source, work / "test", args.test_seeds),
    }
    tables, epochs = {}, []
    for label, (root, out, seeds) in splits.items():
        tables[label] = []
        for seed in seeds:
            epochs.append(run_or_reuse(root, out, seed, [])["epochs"])
            scores = score_run(run_dir_of(out, seed, []))
            tables[label].append(scores)
            print(label, seed, {k: round(v["acc"], 1) for k, v in scores.items()}, flush=True)
    m = machine()
    trained = (
        f"Training: {m['cpu']} ({m['cores']} cores; {isa_flags()}), torch {m['torch']},"
        f" `trainer.precision=auto`; {min(epochs)}-{max(epochs)} epochs in the 60 s of each run."
    )
    return write_report(args, "chest_views.py", lambda cmd: render(tables, cmd, trained))


if __name__ == "__main__":
    raise SystemExit(main())
