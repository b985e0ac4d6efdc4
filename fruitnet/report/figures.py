"""Report figures: test accuracy against model size, and per-epoch training curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from PIL import Image

from fruitnet.files import atomic_path
from fruitnet.report.runs import epoch_curve, read_metrics, run_label, to_number

MARKERS = {"cnn": "o", "resnet50": "s", "proxyless": "^"}
OTHER_MARKERS = ["D", "v", "P", "X", "*", "h"]
# The four training curves of `--curves` / `write_curves`: loss and accuracy, train and val
CURVE_PANELS = (
    ("train/loss_epoch", "training loss"),
    ("val/loss", "validation loss"),
    ("train/acc", "training accuracy"),
    ("val/acc", "validation accuracy"),
)


def _size_mib(run: dict[str, Any]) -> float | None:
    for key in ("weights_mb", "fp32_mib", "checkpoint_mb"):
        value = to_number(run.get(key))
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
        if (size := _size_mib(r)) is not None and (acc := to_number(r.get("test_acc"))) is not None
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
    markers: dict[str, str] = {}
    _scatter_runs(ax, points, colors, markers)
    _scale_axes(ax, points)
    _legend(ax, points, colors, markers)
    return fig


Point = tuple[dict[str, Any], float, float]  # (run, size MiB, test accuracy %)


def _scatter_runs(
    ax: Any, points: Sequence[Point], colors: dict[str, str], markers: dict[str, str]
) -> None:
    with_data = len(colors) > 1
    best_of_label: dict[str, float] = {}
    for r, _, acc in points:
        label = run_label(r, with_data=with_data)
        best_of_label[label] = max(acc, best_of_label.get(label, -1.0))
    annotate_all = len(points) <= 12
    done: set[str] = set()
    for r, size, acc in points:
        ax.scatter(
            size,
            acc,
            marker=_marker_for(str(r.get("model")), markers),
            s=70,
            color=colors[str(r.get("data"))],
            edgecolor="black",
            linewidth=0.6,
            zorder=3,
        )
        label = run_label(r, with_data=with_data)
        if annotate_all or (acc == best_of_label[label] and label not in done):
            done.add(label)
            ax.annotate(label, (size, acc), xytext=(6, 5), textcoords="offset points", fontsize=9)


def _scale_axes(ax: Any, points: Sequence[Point]) -> None:
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


def _legend(
    ax: Any, points: Sequence[Point], colors: dict[str, str], markers: dict[str, str]
) -> None:
    handles = [
        ax.scatter(
            [],
            [],
            marker=_marker_for(model, markers),
            color="white",
            edgecolor="black",
            label=model,
        )
        for model in sorted({str(r.get("model")) for r, _, _ in points})
    ]
    handles += [
        ax.scatter([], [], marker="o", color=c, label=f"data: {d}") for d, c in colors.items()
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)


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
    fig = curves_figure(runs, CURVE_PANELS, rows=rows, title=title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        if colors:
            with Image.open(tmp) as img:
                small = img.convert("RGB").quantize(colors=colors)
            small.save(tmp, format="PNG", optimize=True)
    return Path(path)
