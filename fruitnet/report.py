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
(`load_runs`, `read_metrics`) and figures are reused by notebooks/compare_models.ipynb.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from PIL import Image

__all__ = [
    "Column",
    "accuracy_vs_size_figure",
    "columns_for",
    "CURVE_PANELS",
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

RESULTS_NAME = "results.json"
MISSING = "\u2013"  # en dash
# Binary-task metrics (chest X-ray); their columns appear only when some run has them.
BINARY_METRICS = [
    ("test_precision", "precision"),
    ("test_recall", "recall"),
    ("test_specificity", "specificity"),
    ("test_f1", "F1"),
]
MARKERS = {"cnn": "o", "resnet50": "s", "proxyless": "^"}
# The four training curves of `--curves` / `write_curves`: loss and accuracy, train and val
CURVE_PANELS = (
    ("train/loss_epoch", "training loss"),
    ("val/loss", "validation loss"),
    ("train/acc", "training accuracy"),
    ("val/acc", "validation accuracy"),
)
OTHER_MARKERS = ["D", "v", "P", "X", "*", "h"]


class NoRunsError(RuntimeError):
    """No readable results.json under the given paths."""


# --------------------------------------------------------------------------- loading


def default_logs_dir() -> Path:
    """`paths.log_dir` of the default config: `$FRUITNET_ROOT/logs`, else `./logs`."""
    return Path(os.environ.get("FRUITNET_ROOT") or ".") / "logs"


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_result_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every results.json given directly, below a given directory, or matched by a glob.

    A directory is searched recursively, so a multirun folder (`<sweep>/<n>/results.json`) or the
    whole `logs/` tree works. A glob may match directories or results.json files. The result is
    sorted and free of duplicates.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        text = os.fspath(raw)
        matches = [Path(text)] if Path(text).exists() or not _has_magic(text) else []
        if not matches:
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
        for match in matches:
            if match.is_file() and match.name == RESULTS_NAME:
                found[match.resolve()] = None
            elif match.is_dir():
                for f in sorted(match.rglob(RESULTS_NAME)):
                    if f.is_file():
                        found[f.resolve()] = None
    return sorted(found)


def load_runs(
    paths: Iterable[str | os.PathLike] | None = None, *, warn: Callable[[str], Any] | None = None
) -> list[dict[str, Any]]:
    """Read the runs' results.json files (default: everything under `default_logs_dir()`).

    Each run dict is the file's content plus `results_path` and `run_path` (where the file is
    now, which may differ from the recorded `run_dir` when logs were moved) and a short `label`.
    Files that are unreadable or are not training results are skipped with a message to `warn`
    (stderr by default). Sorted by data set, model, norm and label.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    paths = [default_logs_dir()] if paths is None else list(paths)
    runs: list[dict[str, Any]] = []
    for path in find_result_files(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            warn(f"skipping {path}: {err}")
            continue
        if not isinstance(data, dict) or "model" not in data:
            warn(f"skipping {path}: not a fruitnet training result (no 'model' key)")
            continue
        data["results_path"] = str(path)
        data["run_path"] = str(path.parent)
        runs.append(data)
    labels = _labels([Path(r["run_path"]) for r in runs])
    for run, label in zip(runs, labels, strict=True):
        run["label"] = label
    runs.sort(
        key=lambda r: (str(r.get("data")), str(r.get("model")), bool(r.get("norm")), r["label"])
    )
    return runs


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short, unique names: each run directory relative to what all of them share."""
    if not run_dirs:
        return []
    if len(run_dirs) == 1:
        return [run_dirs[0].name]
    common = Path(os.path.commonpath([str(p) for p in run_dirs]))
    # Sibling runs (a multirun's 0/, 1/, ...) keep their parent's name for context.
    if any(p.parent == common for p in run_dirs):
        common = common.parent
    return [str(p.relative_to(common)) for p in run_dirs]


def run_label(run: dict[str, Any], *, with_data: bool = False) -> str:
    """Plot label: "model/norm" or "model/raw", plus "@data" when several data sets are shown."""
    norm = run.get("norm")
    text = f"{run.get('model', '?')}/{'norm' if norm else 'raw' if norm is not None else '?'}"
    return f"{text}@{run.get('data', '?')}" if with_data else text


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of `<run>/csv/metrics.csv` (CSVLogger), empty cells dropped, values as floats.
    An empty list when the run has no CSV log (fast_dev_run, logger=null)."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    rows: list[dict[str, float]] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            parsed = {}
            for key, value in row.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    continue
            rows.append(parsed)
    return rows


def epoch_curve(rows: Sequence[dict[str, float]], column: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of a per-epoch metric, e.g. "val/acc" or "train/loss_epoch"; the last
    value logged in an epoch wins (a resumed run's CSV holds only its own epochs)."""
    by_epoch: dict[int, float] = {}
    for row in rows:
        if column in row and "epoch" in row:
            by_epoch[int(row["epoch"])] = row[column]
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


# --------------------------------------------------------------------------- the table


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _fmt(fmt: str, scale: float = 1.0) -> Callable[[Any], str]:
    def format_value(value: Any) -> str:
        number = _num(value)
        return MISSING if number is None else format(number * scale, fmt)

    return format_value


def _pct(value: Any) -> str:
    number = _num(value)
    return MISSING if number is None else f"{100 * number:.2f} %"


def _duration(value: Any) -> str:
    seconds = _num(value)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value).replace("|", "\\|")


def _norm(value: Any) -> str:
    return MISSING if value is None else ("yes" if value else "no")


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[dict[str, Any]], Any]
    format: Callable[[Any], str]
    align: str = "right"  # markdown alignment: "left" | "right"


def _key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda run: run.get(name)


BASE_COLUMNS = [
    Column("run", _key("label"), _text, "left"),
    Column("model", _key("model"), _text, "left"),
    Column("data", _key("data"), _text, "left"),
    Column("norm", _key("norm"), _norm, "left"),
    Column("optimizer", _key("optimizer"), _text, "left"),
    Column("lr", _key("lr"), _fmt("g")),
    Column("batch", _key("batch_size"), _fmt(".0f")),
    Column("params (M)", _key("params"), _fmt(".2f", 1e-6)),
    # The study's size measure: the network's state_dict as saved to a weights file
    Column("weights MiB", _key("weights_mb"), _fmt(".2f")),
    # The Lightning checkpoint of the best epoch (weights + optimizer state + hparams)
    Column("ckpt MiB", _key("checkpoint_mb"), _fmt(".2f")),
    Column("GFLOPs", _key("flops"), _fmt(".2f", 1e-9)),
    Column("latency ms (b=1)", _key("latency_ms_b1"), _fmt(".2f")),
    Column("val acc", _key("val_acc"), _pct),
    Column("test acc", _key("test_acc"), _pct),
]
TAIL_COLUMNS = [
    Column("epochs", _key("epochs"), _fmt(".0f")),
    Column("train time", _key("wall_s"), _duration),
    Column("images/s", _key("train_images_per_s"), _fmt(".0f")),
]


def columns_for(runs: Sequence[dict[str, Any]]) -> list[Column]:
    """The table's columns; the binary metrics only when some run has them."""
    extra = [
        Column(header, _key(key), _pct)
        for key, header in BINARY_METRICS
        if any(_num(r.get(key)) is not None for r in runs)
    ]
    if any(_num(r.get("test_auroc")) is not None for r in runs):
        extra.append(Column("AUROC", _key("test_auroc"), _fmt(".3f")))
    return BASE_COLUMNS + extra + TAIL_COLUMNS


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run, GitHub-flavoured markdown, missing values as "–"."""
    columns = columns_for(runs)
    header = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join(":---" if c.align == "left" else "---:" for c in columns) + "|"
    rows = ["| " + " | ".join(c.format(c.get(r)) for c in columns) + " |" for r in runs]
    return "\n".join([header, rule, *rows])


# --------------------------------------------------------------------------- figures


def _size_mib(run: dict[str, Any]) -> float | None:
    for key in ("weights_mb", "fp32_mib", "checkpoint_mb"):
        value = _num(run.get(key))
        if value is not None and value > 0:
            return value
    return None


def _marker_for(model: str, seen: dict[str, str]) -> str:
    if model in MARKERS:
        return MARKERS[model]
    if model not in seen:
        seen[model] = OTHER_MARKERS[len(seen) % len(OTHER_MARKERS)]
    return seen[model]


def accuracy_vs_size_figure(runs: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """Test accuracy (%) against model size (weights MiB), one marker per run.

    Marker shape = model, colour = data set; each point is labelled "model/norm" (or
    "model/raw"), with "@data" when the runs cover several data sets. With many runs (a sweep)
    only the best run of each label is annotated, so the text stays readable.
    """
    points = [
        (r, size, 100 * acc)
        for r in runs
        if (size := _size_mib(r)) is not None and (acc := _num(r.get("test_acc"))) is not None
    ]
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel("model size: weights file (MiB)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"Test accuracy vs model size ({len(points)} of {len(runs)} runs)")
    ax.grid(True, alpha=0.3)
    if not points:
        ax.text(
            0.5,
            0.5,
            "no run has both a test accuracy and a model size",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return fig

    datasets = sorted({str(r.get("data")) for r, _, _ in points})
    colors = {d: f"C{i % 10}" for i, d in enumerate(datasets)}
    with_data = len(datasets) > 1
    extra_markers: dict[str, str] = {}
    best_of_label: dict[str, float] = {}
    for r, _, acc in points:
        label = run_label(r, with_data=with_data)
        best_of_label[label] = max(acc, best_of_label.get(label, -1.0))
    annotate_all = len(points) <= 12
    done: set[str] = set()
    for r, size, acc in points:
        model = str(r.get("model"))
        ax.scatter(
            size,
            acc,
            marker=_marker_for(model, extra_markers),
            s=70,
            color=colors[str(r.get("data"))],
            edgecolor="black",
            linewidth=0.6,
            zorder=3,
        )
        label = run_label(r, with_data=with_data)
        if annotate_all or (acc == best_of_label[label] and label not in done):
            done.add(label)
            ax.annotate(
                label,
                (size, acc),
                xytext=(6, 5),
                textcoords="offset points",
                fontsize=9,
            )

    sizes = [s for _, s, _ in points]
    if max(sizes) / min(sizes) > 5:
        # Log scale (sizes span 10-100 MiB) with plain numbers at 1-2-5 steps, not 10^k
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    accs = [a for _, _, a in points]
    low, high = min(accs), max(accs)
    pad = max(1.0, 0.1 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad) + 0.5)
    ax.margins(x=0.15)

    handles = []
    for model in sorted({str(r.get("model")) for r, _, _ in points}):
        handles.append(
            ax.scatter(
                [],
                [],
                marker=_marker_for(model, extra_markers),
                color="white",
                edgecolor="black",
                label=model,
            )
        )
    for d in datasets:
        handles.append(ax.scatter([], [], marker="o", color=colors[d], label=f"data: {d}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    return fig


def curves_figure(
    runs: Sequence[dict[str, Any]],
    metrics: Sequence[tuple[str, str]] = (
        ("train/loss_epoch", "training loss"),
        ("val/loss", "validation loss"),
        ("val/acc", "validation accuracy"),
    ),
    *,
    rows: Sequence[Sequence[dict[str, float]]] | None = None,
    title: str | None = None,
) -> Figure:
    """Per-epoch curves from each run's csv/metrics.csv, one panel per metric, one line per run
    (runs without a CSV log are left out and named in the title).

    `rows` (one list per run) replaces reading the CSVs, e.g. a resumed run's two CSVs joined
    into one curve; a run's optional "color" key fixes its line colour (seeds of one recipe)."""
    fig = Figure(figsize=(5 * len(metrics), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    if rows is None:
        rows = [read_metrics(r["run_path"]) for r in runs]
    logged = [(r, run_rows) for r, run_rows in zip(runs, rows, strict=True) if run_rows]
    for ax, (column, panel) in zip(axes, metrics, strict=True):
        for i, (run, rows) in enumerate(logged):
            epochs, values = epoch_curve(rows, column)
            if epochs:
                # Lightning counts epochs from 0; plotted from 1 like the results' "epochs"
                x = [e + 1 for e in epochs]
                color = run.get("color", f"C{i % 10}")
                ax.plot(x, values, marker="o", ms=3, color=color, label=run["label"])
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(
                0.5, 0.5, f"no {column} logged", ha="center", va="center", transform=ax.transAxes
            )
    missing = len(runs) - len(logged)
    note = f"{missing} run(s) without csv/metrics.csv not shown" if missing else ""
    if title or note:
        fig.suptitle(" \u2013 ".join(t for t in (title, note) if t), fontsize=10)
    return fig


def write_curves(
    runs: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    rows: Sequence[Sequence[dict[str, float]]] | None = None,
    title: str | None = None,
    dpi: int = 80,
    colors: int | None = 64,
) -> Path:
    """`curves_figure` with the four CURVE_PANELS, saved as a PNG: 80 dpi and a 64-colour palette
    by default (a third of the bytes of full colour for line plots, e.g. to commit next to a
    table); colors=None keeps full colour."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = curves_figure(runs, CURVE_PANELS, rows=rows, title=title)
    fig.savefig(path, dpi=dpi, facecolor="white")
    if colors:
        with Image.open(path) as img:
            small = img.convert("RGB").quantize(colors=colors)
        small.save(path, optimize=True)
    return path


# --------------------------------------------------------------------------- the CLI


def write_report(
    runs: Sequence[dict[str, Any]], out_dir: str | os.PathLike, sources: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write report.md (the table) and report.png (accuracy vs size) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "report.png"
    fig = accuracy_vs_size_figure(runs)
    fig.savefig(png, dpi=120, facecolor="white")
    md = out / "report.md"
    lines = [
        "# fruitnet report",
        "",
        f"{len(runs)} run(s), generated {dt.datetime.now().isoformat(timespec='seconds')}"
        + (f" from {', '.join(f'`{s}`' for s in sources)}" if sources else "")
        + ".",
        "",
        markdown_table(runs),
        "",
        "weights MiB: the network's state_dict file (the study's size measure); ckpt MiB: the "
        "Lightning checkpoint of the best epoch; latency: ms per image at batch 1 on the "
        "training device; train time: the whole run (fit and test); images/s: training "
        "throughput.",
        "",
        f"![test accuracy vs model size]({png.name})",
        "",
    ]
    md.write_text("\n".join(lines))
    return md, png


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
        "--curves",
        action="store_true",
        help="also write curves.png: train/val loss and accuracy per epoch of every run",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sources = args.paths or [str(default_logs_dir())]
    runs = load_runs(sources)
    if not runs:
        where = ", ".join(sources)
        print(
            f"fruitnet.report: no results.json found under {where}. Train first "
            "(e.g. `make train` or `python -m fruitnet.train`), or pass the run directories.",
            file=sys.stderr,
        )
        return 1
    print(markdown_table(runs))
    md, png = write_report(runs, args.out, sources)
    print(f"\n{len(runs)} run(s); wrote {md} and {png}")
    if args.curves:
        print(f"wrote {write_curves(runs, Path(args.out) / 'curves.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
