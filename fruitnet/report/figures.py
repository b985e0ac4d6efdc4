"""Report figures: test accuracy against model size (numbered points, keyed in a list of the
runs beside the plot), and per-epoch training curves."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from PIL import Image

from fruitnet.files import atomic_path
from fruitnet.report.runs import (
    epoch_curve,
    model_words,
    read_metrics,
    run_kind,
    run_label,
    to_number,
)

MARKERS = {"cnn": "o", "resnet50": "s", "proxyless": "^", "searched net": "*"}
KEY_WIDTH = 78  # characters per line of the list of runs beside the plot
OTHER_MARKERS = ["D", "v", "P", "X", "h", "p"]
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


def _marker_key(run: dict[str, Any]) -> str:
    return "searched net" if model_words(run).startswith("searched net") else str(run.get("model"))


def _marker_for(model: str, seen: dict[str, str]) -> str:
    if model in MARKERS:
        return MARKERS[model]
    if model not in seen:
        seen[model] = OTHER_MARKERS[len(seen) % len(OTHER_MARKERS)]
    return seen[model]


Point = tuple[dict[str, Any], float, float]  # (run, size MiB, test accuracy %)


def accuracy_vs_size_figure(runs: Sequence[dict[str, Any]], *, title: str | None = None) -> Figure:
    """Test accuracy (%) against model size (weights MiB), one numbered marker per training run
    or evaluation (searches have no test accuracy).

    Marker shape = model (searched nets their own), colour = data set, filled = training run,
    hollow = evaluation of a checkpoint. The numbers key into the list beside the plot, which
    names each run (`run_label`: experiment or folder, model, norm in words); points whose
    numbers would overlap share one label ("1,2": e.g. a run and an evaluation of its
    checkpoint).
    """
    shown = [r for r in runs if run_kind(r) in ("train", "eval")]
    points = [
        (r, size, 100 * acc)
        for r in shown
        if (size := _size_mib(r)) is not None and (acc := to_number(r.get("test_acc"))) is not None
    ]
    key = _run_key(points)
    fig = Figure(figsize=(12, max(5.5, 1.0 + 0.17 * len(key))), layout="constrained")
    FigureCanvasAgg(fig)
    ax, key_ax = fig.subplots(1, 2, width_ratios=(1.25, 1))
    key_ax.axis("off")
    ax.set_xlabel("model size: weights file (MiB)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"Test accuracy vs model size ({len(points)} of {len(shown)} runs)")
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
    key_ax.text(
        0.0, 1.0, "\n".join(key), transform=key_ax.transAxes, ha="left", va="top",
        fontsize=7.5, family="monospace", linespacing=1.5,
    )  # fmt: skip
    fig.draw_without_rendering()  # the final layout: label overlaps are measured in it
    _number_points(ax, points)
    return fig


def _scatter_runs(
    ax: Any, points: Sequence[Point], colors: dict[str, str], markers: dict[str, str]
) -> None:
    for r, size, acc in points:
        color = colors[str(r.get("data"))]
        evaluation = run_kind(r) == "eval"
        ax.scatter(
            size,
            acc,
            marker=_marker_for(_marker_key(r), markers),
            s=90 if evaluation else 70,
            color="none" if evaluation else color,
            edgecolor=color if evaluation else "black",
            linewidth=1.6 if evaluation else 0.6,
            zorder=3,
        )


def _run_key(points: Sequence[Point]) -> list[str]:
    """The lines of the numbered list of runs beside the plot: number, then what the run is
    (`run_label`), wrapped."""
    with_data = len({str(r.get("data")) for r, _, _ in points}) > 1
    lines = []
    for i, (r, _, _) in enumerate(points, 1):
        lines += textwrap.wrap(
            run_label(r, with_data=with_data), KEY_WIDTH, initial_indent=f"{i:>3}  ",
            subsequent_indent=" " * 7, break_on_hyphens=False,
        )  # fmt: skip
    return lines


def _number_points(ax: Any, points: Sequence[Point]) -> None:
    """Each point's number beside it; a label that would overlap one already placed joins it
    ("1,2"), so no two labels cover each other."""
    renderer = ax.figure.canvas.get_renderer()
    placed: list[Any] = []
    for i, (_, size, acc) in enumerate(points, 1):
        label = ax.annotate(
            str(i), (size, acc), xytext=(6, 5), textcoords="offset points", fontsize=9, zorder=4
        )
        label.set_in_layout(False)
        while True:
            box = label.get_window_extent(renderer)
            hit = next((p for p in placed if p.get_window_extent(renderer).overlaps(box)), None)
            if hit is None:
                placed.append(label)
                break
            placed.remove(hit)
            hit.set_text(f"{hit.get_text()},{label.get_text()}")
            label.remove()
            label = hit


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
            [], [], marker=_marker_for(model, markers), color="white", edgecolor="black",
            label=model,
        )
        for model in sorted({_marker_key(r) for r, _, _ in points})
    ]  # fmt: skip
    handles += [
        ax.scatter([], [], marker="o", color=c, label=f"data: {d}") for d, c in colors.items()
    ]
    if any(run_kind(r) == "eval" for r, _, _ in points):
        handles += [
            ax.scatter([], [], marker="o", color="0.5", edgecolor="black", label="training run"),
            ax.scatter(
                [], [], marker="o", color="none", edgecolor="0.5", linewidth=1.6,
                label="evaluation",
            ),
        ]  # fmt: skip
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
