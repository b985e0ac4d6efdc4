"""Would averaging chest nets, or another checkpoint of each, rank the test films well enough?

    python bench/chest_ensemble.py --work logs/chest_ensemble   # -> bench/CHEST_ENSEMBLE.md

Averaging the probabilities of nets trained from other seeds is the cheapest way to a better
ranking (Lakshminarayanan et al. 2017, deep ensembles). Trains best_chest as bench/RECIPES.md's
chest comparison does (`data=folder`, one run at a time, runs already done kept) on chest_xray-small,
seeds 0-5, once with its 60 s of fit and once with 20 s, then scores every ensemble of k of those
nets on the 120 test films: the mean P(PNEUMONIA) of its members (fp32 eager torch) cut at the
mean of the members' own cuts (`model.threshold=auto`, each chosen on that run's validation films;
their validation films differ by seed, and some are the training films of the other members, so no
cut is chosen on the ensemble's probabilities). Each net is taken from three checkpoints, each with
the cut of its epoch: the epoch of the best validation accuracy (what best_chest keeps, chosen on
30 validation films), the last epoch, and the epoch of the lowest validation loss (the same seed
trained again with `callbacks.model_checkpoint.monitor=val/loss`: a loss ranks 30 films' epochs
more finely than an accuracy that ties). k nets of 20 s cost what one net of 60 s costs; k nets of
60 s cost k times that. Rows give the mean ± std over all C(6, k) ensembles of that size, which
share members, so their std is no seed spread.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import torch
from torchmetrics.functional.classification import binary_roc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import chest_films as films  # noqa: E402
from benchlib.common import find_dataset, machine_text  # noqa: E402
from chest_data_curve import auroc_needed  # noqa: E402
from chest_heldout import run_dir_of, run_or_reuse  # noqa: E402

# seconds of fit per net -> the override that sets it (60 s is best_chest's own cap)
FITS = {60: [], 20: ["trainer.max_time=00:00:00:20"]}
# which checkpoint of each net -> the run's extra overrides and the file in its checkpoints/
CHECKPOINTS = {
    "best val/acc": ([], "epoch_*.ckpt"),
    "last epoch": ([], "last.ckpt"),
    "lowest val/loss": (
        ["callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min"],
        "epoch_*.ckpt",
    ),
}
SIZES = (1, 2, 3, 6)


def test_probs(run: Path, pattern: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """P(PNEUMONIA) of the run's test films from its checkpoint matching ``pattern``, their
    labels, and the cut stored with it (chosen on the run's validation films)."""
    module = films.load_module(run, pattern)
    dm = films.run_datamodule(run)
    batches, labels = films.decoded(dm, dm.test_dataloader())
    return films.p_pneumonia(module, batches), labels, float(module.threshold)


def best_accuracy(probs: torch.Tensor, labels: torch.Tensor, min_spec: float = 85.0) -> float:
    """The highest accuracy (%) of any cut on ``probs`` whose specificity is ``min_spec`` % or
    more: read off the test films, so it chooses nothing; it shows whether the ranking alone
    allows the goal, whatever cut a validation split would choose."""
    fpr, tpr, _ = binary_roc(probs, labels)  # every cut between two films, all and none too
    positives = int(labels.sum())
    negatives = len(labels) - positives
    # back to film counts, so a specificity of exactly min_spec is not lost to float rounding
    tp, tn = (tpr * positives).round(), ((1 - fpr) * negatives).round()
    acc = 100 * (tp + tn) / len(labels)
    return acc[100 * tn / negatives >= min_spec].max().item()


def ensembles(members: list[tuple[torch.Tensor, torch.Tensor, float]], k: int) -> list[dict]:
    """The test scores of every ensemble of ``k`` of ``members``."""
    labels = members[0][1]
    if any(not torch.equal(y, labels) for _, y, _ in members):
        raise SystemExit("the runs saw their test films in different orders")
    out = []
    for group in itertools.combinations(members, k):
        probs = torch.stack([p for p, _, _ in group]).mean(0)
        cut = statistics.mean(c for _, _, c in group)
        out.append({**films.score(probs, labels, cut), "best_acc": best_accuracy(probs, labels)})
    return out


def _cell(values: list[float], digits: int = 1) -> str:
    # One ensemble of all the nets has no spread to show
    return films.mean_std(values, digits) if len(values) > 1 else f"{values[0]:.{digits}f}"


def render(rows: list[tuple[int, str, int, list[dict]]], command: str, where: str) -> str:
    lines = [
        "# Chest recipe: ensembles of seeds and the checkpoint of each, on the test films",
        "",
        f"Command: `{command}` (the module docstring says how the runs are made and scored).",
        "",
        f"best_chest on {where}, `trainer.precision=auto`, one run at a time; the 120 test films"
        " of chest_xray-small, scored in fp32. Each row is every ensemble of k nets out of 6 seeds;"
        " mean ± std over those ensembles.",
        "",
        "| checkpoint | nets | fit per net | fit in all | ensembles | test acc % | specificity %"
        " | sensitivity % | AUROC | best acc % at specificity >= 85 %, any cut |",
        "|---|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for fit, checkpoint, k, scores in rows:
        cells = [_cell([s[m] for s in scores]) for m in ("acc", "spec", "sens")]
        auroc = _cell([s["auroc"] for s in scores], 3)
        best_acc = _cell([s["best_acc"] for s in scores])
        lines.append(
            f"| {checkpoint} | {k} | {fit} s | {k * fit} s | {len(scores)} | {' | '.join(cells)}"
            f" | {auroc}"
            f" | {best_acc} |"
        )
    best = max(statistics.mean(s["auroc"] for s in scores) for *_, scores in rows)
    reach = max(max(s["best_acc"] for s in scores) for *_, scores in rows)
    lines += [
        "",
        "The last column is the best any cut could do, read off the test films themselves (so it"
        " chooses nothing): the highest accuracy among the cuts with a specificity of 85 % or more.",
        "",
        f"The goal (>= 90 % accuracy with >= 85 % specificity) needs an AUROC of about"
        f" {auroc_needed():.3f} (the equal-variance binormal ROC through 90 % sensitivity and 90 %"
        f" specificity, bench/CHEST_DATA.md); the best row's mean AUROC is {best:.3f}, and no"
        f" ensemble or net here reaches more than {reach:.1f} % at any cut with that specificity.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = films.bench_parser("chest_ensemble.py", __doc__, "CHEST_ENSEMBLE.md", "runs and cache")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    source = find_dataset("chest_xray-small", args.data)
    rows = []
    for checkpoint, (extra, pattern) in CHECKPOINTS.items():
        for fit, overrides in FITS.items():
            members = []
            for seed in args.seeds:
                r = run_or_reuse(source, work, seed, [*overrides, *extra])
                members.append(test_probs(run_dir_of(work, seed, [*overrides, *extra]), pattern))
                print(fit, seed, round(100 * r["test_acc"], 1), flush=True)
            rows += [
                (fit, checkpoint, k, ensembles(members, k)) for k in SIZES if k <= len(members)
            ]
    return films.write_report(
        args, "chest_ensemble.py", lambda cmd: render(rows, cmd, machine_text())
    )


if __name__ == "__main__":
    raise SystemExit(main())
