"""How much would more training films buy the chest recipe? A learning curve on the test films.

    python bench/chest_data_curve.py --work logs/chest_data_curve   # -> bench/CHEST_DATA.md

Trains best_chest as bench/RECIPES.md's chest comparison does (60 s of fit, `data=folder`, one run
at a time, runs already done kept) on chest_xray-small with `data.max_samples_per_class=n`: n of
the 150 training films per class, a random subset drawn by the run's seed (the 60 test and 8
validation films per class stay whole for n >= 60), seeds 0-2. It reports test accuracy,
specificity, sensitivity and AUROC against n, and fits the ranking error as a power law of the
films, log(1 - AUROC) = a + b log(2n), by least squares over the per-seed points (the usual shape
of a learning curve, Hestness et al. 2017). The AUROC the goal needs (>= 90 % accuracy with >= 85 %
specificity on balanced films) is read off the equal-variance binormal ROC: its best point for the
goal is sensitivity = specificity = 90 %. The fit's extrapolations (to that AUROC, and to the
5,232 training films of Kermany et al.) read the trend; they are not measurements: a 60 s cap and
this data regime do not hold that far out.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.chest_films import bench_parser, run_cells, write_report  # noqa: E402
from benchlib.common import find_dataset, machine_text  # noqa: E402
from chest_heldout import run_or_reuse  # noqa: E402

KERMANY_TRAIN = 5232  # training films of Kermany et al. 2018 (1,349 NORMAL + 3,883 PNEUMONIA)


def auroc_needed(acc: float = 0.90) -> float:
    """AUROC of the equal-variance binormal ROC through sensitivity = specificity = ``acc``."""
    z = statistics.NormalDist()
    return z.cdf(2 * z.inv_cdf(acc) / math.sqrt(2))


def fit_power_law(films: list[float], auroc: list[float]) -> tuple[float, float]:
    """``(a, b)`` of log(1 - AUROC) = a + b log(films), least squares."""
    xs = [math.log(f) for f in films]
    ys = [math.log(1 - a) for a in auroc]
    b, a = statistics.linear_regression(xs, ys)
    return a, b


def films_for(a: float, b: float, auroc: float) -> float:
    """The films at which the fit reaches ``auroc`` (inf when it does not fall with films)."""
    return math.exp((math.log(1 - auroc) - a) / b) if b < 0 else math.inf


def render(rows: dict[int, list[dict]], command: str, where: str) -> str:
    lines = [
        "# Chest recipe: test-film scores against the number of training films",
        "",
        f"Command: `{command}` (the module docstring says how the runs and the fit are made).",
        "",
        f"best_chest, 60 s of fit a run, one run at a time on {where}, `trainer.precision=auto`;"
        " the 120 test films of chest_xray-small. Mean ± std (sample) over the seeds.",
        "",
        "| training films per class (of 150) | seeds | test acc % | specificity % | sensitivity %"
        " | AUROC | epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    films, aurocs = [], []
    for n, runs in sorted(rows.items()):
        lines.append(f"| {n} | {len(runs)} | {run_cells(runs)} |")
        films += [2 * n] * len(runs)
        aurocs += [r["test_auroc"] for r in runs]
    a, b = fit_power_law(films, aurocs)
    need = auroc_needed()
    fit = (
        f"Fit over the {len(films)} runs: 1 - AUROC = {math.exp(a):.3g} x films^{b:.2f}. The goal"
        f" needs an AUROC of about {need:.3f} (the binormal ROC through 90 % sensitivity and 90 %"
        " specificity)"
    )
    if b < 0:
        at_full = 1 - math.exp(a + b * math.log(KERMANY_TRAIN))
        fit += (
            f"; at this trend that is {films_for(a, b, need):,.0f} films, and at Kermany et al.'s"
            f" {KERMANY_TRAIN:,} training films the trend reads {at_full:.3f}. Both are"
            f" extrapolations of a fit over {min(films)}-{max(films)} films, not measurements."
        )
    else:
        fit += (
            f". The ranking error does not fall with more films over {min(films)}-{max(films)}"
            " films, so the fit extrapolates to nothing."
        )
    lines += ["", fit]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("chest_data_curve.py", __doc__, "CHEST_DATA.md", "runs and cache")
    p.add_argument("--films", type=int, nargs="+", default=[60, 100, 150], help="per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    if min(args.films) < 60:
        raise SystemExit("--films: at least 60 per class, or the cap would cut the test films too")
    work = Path(args.work).resolve()
    source = find_dataset("chest_xray-small", args.data)
    rows: dict[int, list[dict]] = {}
    for n in args.films:
        for seed in args.seeds:
            overrides = [f"data.max_samples_per_class={n}"]
            rows.setdefault(n, []).append(run_or_reuse(source, work, seed, overrides))
            print(n, seed, round(100 * rows[n][-1]["test_acc"], 1), flush=True)
    return write_report(args, "chest_data_curve.py", lambda cmd: render(rows, cmd, machine_text()))


if __name__ == "__main__":
    raise SystemExit(main())
