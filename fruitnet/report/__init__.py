"""`python -m fruitnet.report [RUN_DIRS_OR_GLOBS...] [--out DIR]`: the study's comparison table.

Reads every `results.json` below the given run directories, multirun folders or globs (default:
everything under `logs/`, i.e. `$FRUITNET_ROOT/logs` when that is set), prints one markdown table
per kind of run (the record's `kind`, `fruitnet.record`): training runs (model, data, norm,
parameters, weights and checkpoint MiB, FLOPs, latency, validation and test accuracy, the binary
metrics of chest X-ray runs, epochs, training time, images/s), evaluations (the same sizes and
test metrics, test images, mistakes, eval time, and the training run the checkpoint comes from)
and architecture searches (target, predicted and measured latency, size, supernet val accuracy,
search time); and writes `report.md` and `report.png` (test accuracy against model size, one
numbered marker per training run or evaluation, keyed in a list of the runs) into --out.

    python -m fruitnet.report                                     # all runs under logs/
    python -m fruitnet.report logs/train/multiruns/2026-01-01_12-00-00-000000
    python -m fruitnet.report 'logs/study_*/runs/*' --out reports/
    python -m fruitnet.report logs/best_cnn --curves              # + curves.png (loss, accuracy)

A reader, not a Hydra app: it never trains, and a run's missing keys show as "–". The loaders
(`runs`), the table (`table`) and the figures (`figures`) are reused by
notebooks/compare_models.ipynb and bench/recipes.py; `cli` is the command line.
"""

from fruitnet.report.cli import build_parser, count_runs, main, write_report
from fruitnet.report.figures import (
    CURVE_PANELS,
    accuracy_vs_size_figure,
    curves_figure,
    write_curves,
)
from fruitnet.report.runs import (
    REPORT_KINDS,
    RESULTS_NAME,
    default_logs_dir,
    epoch_curve,
    find_result_files,
    load_runs,
    model_words,
    norm_words,
    read_metrics,
    run_kind,
    run_label,
)
from fruitnet.report.table import MISSING, Column, columns_for, markdown_table, markdown_tables

__all__ = [
    "CURVE_PANELS",
    "MISSING",
    "REPORT_KINDS",
    "RESULTS_NAME",
    "Column",
    "accuracy_vs_size_figure",
    "build_parser",
    "columns_for",
    "count_runs",
    "curves_figure",
    "default_logs_dir",
    "epoch_curve",
    "find_result_files",
    "load_runs",
    "main",
    "markdown_table",
    "markdown_tables",
    "model_words",
    "norm_words",
    "read_metrics",
    "run_kind",
    "run_label",
    "write_curves",
    "write_report",
]
