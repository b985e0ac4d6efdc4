"""Evaluation figures: the confusion matrix and a grid of the most confident mistakes.

Figures are built on `matplotlib.figure.Figure` directly (Agg canvas, no pyplot), so importing
this module neither needs a display nor switches the backend of a notebook that imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from fruitnet.files import atomic_path

__all__ = [
    "confusion_matrix_figure",
    "mistakes_figure",
    "most_confused_classes",
    "save_figure",
    "shorten",
    "top_confusions",
]

# Above this many classes the full matrix has unreadable labels: show the most-confused ones.
MAX_LABELLED_CLASSES = 30


def save_figure(fig: Figure, path: str | Path, dpi: int = 100, *, tight: bool = True) -> Path:
    """``fig`` on a white background, written atomically (the format from the file's suffix);
    ``tight`` crops the empty margin, off for figures whose layout already fills the canvas."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            format=path.suffix.lstrip(".").lower() or "png",
            dpi=dpi,
            bbox_inches="tight" if tight else None,
            facecolor="white",
        )
    return path


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut (labels in a figure)."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def top_confusions(
    cm: np.ndarray | Sequence, class_names: Sequence[str], n: int = 20
) -> list[tuple[str, str, int, float]]:
    """The ``n`` largest off-diagonal cells: ``(true, predicted, count, share of true class)``."""
    cm = np.asarray(cm, dtype=np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    support = cm.sum(1)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = []
    for flat in order:
        t, p = divmod(int(flat), cm.shape[1])
        if off[t, p] == 0:
            break
        pairs.append(
            (class_names[t], class_names[p], int(off[t, p]), off[t, p] / max(support[t], 1))
        )
    return pairs


def most_confused_classes(cm: np.ndarray | Sequence, n: int) -> list[int]:
    """Indices of the ``n`` classes involved in most errors (as true or as predicted class),
    returned in class order so neighbouring names (Apple Red 1/2/3) stay together."""
    cm = np.asarray(cm, dtype=np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    errors = off.sum(0) + off.sum(1)
    ranked = np.argsort(-errors, kind="stable")
    ranked = [int(i) for i in ranked if errors[i] > 0][:n]
    return sorted(ranked)


def confusion_matrix_figure(
    cm: np.ndarray | Sequence,
    class_names: Sequence[str],
    *,
    max_classes: int = MAX_LABELLED_CLASSES,
    table_rows: int = 25,
    title: str | None = None,
) -> Figure:
    """Rows = true class, columns = predicted; colour = share of the true class's images, cells
    annotated with counts. Up to ``max_classes`` classes: the full matrix, labelled. Above: the
    ``max_classes`` most-confused classes only (labelled), beside a table of the largest
    confusions, so a 100+ class matrix stays readable."""
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    full = k <= max_classes
    idx = list(range(k)) if full else most_confused_classes(cm, max_classes)
    if not idx:  # no errors at all: show the first classes rather than an empty plot
        idx = list(range(max_classes))
    sub, sub_share = cm[np.ix_(idx, idx)], share[np.ix_(idx, idx)]
    names = [shorten(class_names[i], 28) for i in idx]
    n = len(idx)

    # Fixed layout in inches (matplotlib's automatic layouts leave aspect-equal matrices floating
    # in empty space): labels left and below, colour bar right, then the table.
    side = max(2.5, n * (0.34 if n > 12 else 0.6))
    left, top, bottom = 2.3, 0.9, 2.3
    table_w = 0.0 if full else 6.0
    rows = top_confusions(cm, class_names, table_rows) if not full else []
    table_h = 0.24 * (len(rows) + 1)
    width = left + side + 1.3 + (table_w + 0.3 if table_w else 0.0)
    height = top + max(side, table_h) + bottom
    fig = Figure(figsize=(width, height))

    def axes(x: float, y_top: float, w: float, h: float):
        return fig.add_axes((x / width, 1 - (y_top + h) / height, w / width, h / height))

    ax = axes(left, top, side, side)
    im = ax.imshow(sub_share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fontsize = 8 if n <= 15 else 7
    for r in range(n):
        for c in range(n):
            if sub[r, c]:
                color = "white" if sub_share[r, c] > 0.5 else "black"
                ax.text(
                    c, r, str(sub[r, c]), ha="center", va="center", fontsize=fontsize, color=color
                )
    fig.colorbar(im, cax=axes(left + side + 0.15, top, 0.18, side), label="share of the true class")
    heading = title or "Confusion matrix"
    if full:
        ax.set_title(f"{heading}: {k} classes, accuracy {accuracy:.1%}", fontsize=11)
        return fig
    ax.set_title(
        f"{heading}: the {n} classes with most errors (of {k}), in class order\n"
        f"accuracy {accuracy:.1%} over all {k} classes; colour = share of the true class",
        fontsize=11,
    )
    _confusion_table(axes(left + side + 1.3 + 0.3, top, table_w, table_h), rows)
    return fig


def _confusion_table(ax, pairs: list[tuple[str, str, int, float]]) -> None:
    ax.axis("off")
    ax.set_title(f"The {len(pairs)} largest confusions (all classes)", fontsize=11)
    if not pairs:
        ax.text(0.0, 1.0, "no errors", va="top", fontsize=9)
        return
    rows = [[shorten(t, 26), shorten(p, 26), str(c), f"{s:.0%}"] for t, p, c, s in pairs]
    table = ax.table(
        cellText=rows,
        colLabels=["true class", "predicted as", "n", "share"],
        colWidths=[0.42, 0.42, 0.07, 0.09],
        bbox=(0, 0, 1, 1),
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)


def mistakes_figure(
    images: torch.Tensor,
    true_names: Sequence[str],
    pred_names: Sequence[str],
    probs: Sequence[float],
    *,
    ncol: int = 4,
    title: str | None = None,
) -> Figure:
    """A grid of uint8 ``N x 3 x H x W`` images, each captioned with its true class and the
    predicted class with its probability (red). The captions sit in the grid's padding."""
    n, _, h, w = images.shape
    ncol = max(1, min(ncol, n))
    # Tiles shown at least ~200 px wide; the padding above each tile holds two caption lines.
    scale = max(1.0, 200.0 / w)
    pad = int(np.ceil(34 / scale))
    grid = make_grid(images, nrow=ncol, padding=pad, pad_value=255)
    grid = grid[:, : grid.shape[1] - pad + 2]  # the padding under the last row holds no caption
    gh, gw = grid.shape[1:]
    dpi = 100
    fig = Figure(figsize=(gw * scale / dpi, gh * scale / dpi + 0.5))
    ax = fig.add_axes((0, 0, 1, gh * scale / dpi / fig.get_figheight()))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    chars = int((w + pad) * scale / 6.2)
    for i in range(n):
        r, c = divmod(i, ncol)
        x = pad + c * (w + pad)
        y = r * (h + pad) + pad - 2
        true = f"true: {shorten(true_names[i], chars - 6)}"
        pred = f"pred: {shorten(pred_names[i], chars - 14)} ({probs[i]:.2f})"
        ax.text(x, y - 13 / scale, true, fontsize=8, va="bottom", ha="left")
        ax.text(x, y, pred, fontsize=8, va="bottom", ha="left", color="#c00000")
    fig.suptitle(title or f"{n} most confident mistakes", fontsize=11, y=1.0, va="top")
    return fig
