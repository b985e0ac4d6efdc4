"""The report's command line: print the tables (one per kind of run), write report.md and
report.png (and curves.png)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fruitnet.files import write_text
from fruitnet.plots import save_figure
from fruitnet.report.figures import accuracy_vs_size_figure, write_curves
from fruitnet.report.runs import REPORT_KINDS, default_logs_dir, load_runs, run_kind
from fruitnet.report.table import markdown_tables

_KIND_WORDS = {"train": "training run(s)", "eval": "evaluation(s)", "search": "search(es)"}


def count_runs(runs: Sequence[dict[str, Any]]) -> str:
    """How many runs of each kind, e.g. "2 training run(s), 1 evaluation(s)"."""
    counts = {k: sum(run_kind(r) == k for r in runs) for k in REPORT_KINDS}
    return ", ".join(f"{n} {_KIND_WORDS[k]}" for k, n in counts.items() if n) or "0 runs"


def write_report(
    runs: Sequence[dict[str, Any]], out_dir: str | os.PathLike, sources: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write report.md (one table per kind of run) and report.png (accuracy vs size) into
    out_dir."""
    out = Path(out_dir)
    png = save_figure(accuracy_vs_size_figure(runs), out / "report.png", dpi=120, tight=False)
    lines = [
        "# fruitnet report",
        "",
        f"{count_runs(runs)}, generated {dt.datetime.now().isoformat(timespec='seconds')}"
        + (f" from {', '.join(f'`{s}`' for s in sources)}" if sources else "")
        + ".",
        "",
        markdown_tables(runs, notes=True),
        "",
        "## Test accuracy vs model size",
        "",
        "Training runs (filled) and evaluations (hollow); the numbers key into the list beside "
        "the plot.",
        "",
        f"![test accuracy vs model size]({png.name})",
        "",
    ]
    return write_text(out / "report.md", "\n".join(lines)), png


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fruitnet.report",
        description="Table and plot of fruitnet runs (every results.json below the given paths).",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="RUN_DIR_OR_GLOB",
        help="run directories, multirun folders, results.json files or globs "
        f"(quote globs for the shell); default: {default_logs_dir()}",
    )
    parser.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="where report.md and report.png are written (default: the current directory)",
    )
    parser.add_argument(
        "--mlflow",
        action="append",
        default=[],
        metavar="URI",
        help="also read the runs of an MLflow store: a tracking URI, or a folder holding "
        "mlflow.db (logs/mlflow); repeatable",
    )
    parser.add_argument(
        "--curves",
        action="store_true",
        help="also write curves.png: train/val loss and accuracy per epoch of every training run",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = args.paths or ([] if args.mlflow else [str(default_logs_dir())])
    sources = [*paths, *args.mlflow]
    try:
        runs = load_runs(paths, mlflow=args.mlflow)
    except Exception as err:  # an MLflow store that is missing or cannot be reached
        print(f"fruitnet.report: {err}", file=sys.stderr)
        return 1
    if not runs:
        where = ", ".join(sources)
        print(
            f"fruitnet.report: no results.json found under {where}. Train first "
            "(e.g. `make train` or `python -m fruitnet.train`), or pass the run directories.",
            file=sys.stderr,
        )
        return 1
    print(markdown_tables(runs))
    md, png = write_report(runs, args.out, sources)
    print(f"\n{count_runs(runs)}; wrote {md} and {png}")
    if args.curves:
        trained = [r for r in runs if run_kind(r) == "train"]
        print(f"wrote {write_curves(trained, Path(args.out) / 'curves.png')}")
    return 0
