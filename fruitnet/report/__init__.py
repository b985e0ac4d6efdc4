"""`python -m fruitnet.report [RUN_DIRS_OR_GLOBS...] [--out DIR]`: the study's comparison table.

Reads every `results.json` below the given run directories, multirun folders or globs (default:
everything under `logs/`, i.e. `$FRUITNET_ROOT/logs` when that is set), prints a markdown table
(model, data, norm, parameters, weights and checkpoint MiB, FLOPs, latency, validation and test
accuracy, the binary metrics of chest X-ray runs, epochs, training time, images/s), and writes
`report.md` and `report.png` (test accuracy against model size, one marker per run) into --out.

    python -m fruitnet.report                                     # all runs under logs/
    python -m fruitnet.report logs/train/multiruns/2026-01-01_12-00-00-000000
    python -m fruitnet.report 'logs/study_*/runs/*' --out reports/
    python -m fruitnet.report logs/best_cnn --curves              # + curves.png (loss, accuracy)

A reader, not a Hydra app: it never trains, and a run's missing keys show as "–". The loaders
(`runs`), the table (`table`) and the figures (`figures`) are reused by
notebooks/compare_models.ipynb and bench/recipes.py; `cli` is the command line.
"""

from fruitnet.report.cli import build_parser, main, write_report
from fruitnet.report.figures import (
    CURVE_PANELS,
    accuracy_vs_size_figure,
    curves_figure,
    write_curves,
)
from fruitnet.report.runs import (
    RESULTS_NAME,
    default_logs_dir,
    epoch_curve,
    find_result_files,
    load_runs,
    read_metrics,
    run_label,
)
from fruitnet.report.table import MISSING, Column, columns_for, markdown_table

__all__ = [
    "CURVE_PANELS",
    "MISSING",
    "RESULTS_NAME",
    "Column",
    "accuracy_vs_size_figure",
    "build_parser",
    "columns_for",
    "curves_figure",
    "default_logs_dir",
    "epoch_curve",
    "find_result_files",
    "load_runs",
    "main",
    "markdown_table",
    "read_metrics",
    "run_label",
    "write_curves",
    "write_report",
]
