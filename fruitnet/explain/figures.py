"""Grad-CAM figures: one image with its map, the mistakes grid and the per-class mean maps.

Built on `matplotlib.figure.Figure` without pyplot, like `fruitnet.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fruitnet.explain.gradcam import normalize_maps
from fruitnet.plots import shorten

CMAP = "jet"
ALPHA = 0.45


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)
    return np.asarray(image)


def _overlay(ax, image: np.ndarray, cam: np.ndarray | None) -> Any:
    ax.imshow(image, interpolation="bilinear")
    im = None
    if cam is not None:
        im = ax.imshow(
            np.ma.masked_invalid(cam), cmap=CMAP, alpha=ALPHA, vmin=0.0, vmax=1.0,
            interpolation="bilinear",
        )  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _note_if_empty(ax, cam: np.ndarray) -> None:
    """Grad-CAM keeps only positive evidence; an all-zero map would otherwise pass for a map."""
    if not np.nanmax(cam, initial=0.0) > 0:
        ax.text(
            0.5, 0.5, "no positive\nevidence", transform=ax.transAxes, ha="center",
            va="center", fontsize=8, color="white",
        )  # fmt: skip


def overlay_figure(
    image: np.ndarray | torch.Tensor,
    cam: np.ndarray,
    title: str,
    *,
    subtitle: str | None = None,
    region: tuple[float, ...] | None = None,
) -> Figure:
    """Two panels: the image, and the image with the 0..1 ``cam`` blended over it (jet; NaN
    transparent), a colour bar, the title above; ``region`` ``(top, left, h, w)`` outlines the
    part the network saw (norm=true's centre crop). A panel's longer side is the image's at
    100 dpi, kept within 2.4..3.2 inches (a 100 px fruit is not blown up, a photo not shrunk
    to a stamp)."""
    image = _hwc(image)
    h, w = image.shape[:2]
    longer = min(max(max(h, w) / 100.0, 2.4), 3.2)
    panel, ph = longer * w / max(h, w), longer * h / max(h, w)
    # Fixed layout in inches: title block, two panels with a gap, colour bar and its labels.
    top = 0.8 if subtitle else 0.6
    gap, bar, right, bottom, left = 0.1, 0.12, 0.45, 0.1, 0.1
    width = left + 2 * panel + gap + 0.12 + bar + right
    height = top + ph + bottom
    fig = Figure(figsize=(width, height))

    def axes(x: float, w_: float):
        return fig.add_axes((x / width, bottom / height, w_ / width, ph / height))

    ax_image, ax_cam = axes(left, panel), axes(left + panel + gap, panel)
    _overlay(ax_image, image, None)
    im = _overlay(ax_cam, image, cam)
    _note_if_empty(ax_cam, cam)
    ax_image.set_title("image", fontsize=9)
    ax_cam.set_title("Grad-CAM", fontsize=9)
    if region is not None and (region[0] > 0.5 or region[1] > 0.5):
        r_top, r_left, rh, rw = region
        for ax in (ax_image, ax_cam):
            ax.add_patch(
                Rectangle(
                    (r_left - 0.5, r_top - 0.5), rw, rh, fill=False, ls="--", lw=1, ec="white"
                )
            )
    cax = axes(left + 2 * panel + gap + 0.12, bar)
    fig.colorbar(im, cax=cax)
    cax.tick_params(labelsize=8)
    heading = title if subtitle is None else f"{title}\n{subtitle}"
    fig.text(0.5, 1 - 0.08 / height, heading, ha="center", va="top", fontsize=10)
    return fig


class _Grid:
    """Fixed layout in inches (matplotlib's automatic layouts leave tall grids with a wide empty
    band under the title): ``rows x cols`` square cells, a caption line above each, a colour bar
    on the right, a title block on top."""

    def __init__(self, rows: int, cols: int, cell: float, title_h: float, caption_h: float):
        self.cell, self.caption_h, self.title_h = cell, caption_h, title_h
        self.gap, self.left, self.bar, self.right = 0.08, 0.1, 0.12, 0.45
        self.width = self.left + cols * (cell + self.gap) + 0.1 + self.bar + self.right
        self.height = title_h + rows * (caption_h + cell) + 0.1
        self.fig = Figure(figsize=(self.width, self.height))

    def _axes(self, x: float, y_top: float, w: float, h: float):
        return self.fig.add_axes(
            (x / self.width, 1 - (y_top + h) / self.height, w / self.width, h / self.height)
        )

    def cell_axes(self, r: int, c: int):
        x = self.left + c * (self.cell + self.gap)
        y = self.title_h + r * (self.caption_h + self.cell) + self.caption_h
        return self._axes(x, y, self.cell, self.cell)

    def colorbar(self, im: Any, cols: int, rows: int) -> None:
        h = min(rows * (self.caption_h + self.cell) - self.caption_h, 3.0)
        x = self.left + cols * (self.cell + self.gap) + 0.1
        cax = self._axes(x, self.title_h + self.caption_h, self.bar, h)
        self.fig.colorbar(im, cax=cax)
        cax.tick_params(labelsize=8)

    def title(self, text: str) -> None:
        self.fig.text(0.5, 1 - 0.08 / self.height, text, ha="center", va="top", fontsize=10)


def mistakes_cam_figure(
    images: torch.Tensor,
    pred_maps: torch.Tensor,
    true_maps: torch.Tensor,
    true_names: Sequence[str],
    pred_names: Sequence[str],
    probs: Sequence[float],
    *,
    title: str | None = None,
) -> Figure:
    """One row per mistake: the image, Grad-CAM for the predicted class, Grad-CAM for the true
    class (each map scaled to 0..1 on its own). ``images`` uint8 ``N x 3 x S x S``, maps
    ``N x S x S``."""
    n = images.shape[0]
    pred_maps, true_maps = normalize_maps(pred_maps), normalize_maps(true_maps)
    grid = _Grid(n, 3, cell=1.7, title_h=0.6, caption_h=0.22)
    im = None
    for i in range(n):
        image = _hwc(images[i])
        axes = [grid.cell_axes(i, c) for c in range(3)]
        _overlay(axes[0], image, None)
        im = _overlay(axes[1], image, pred_maps[i].numpy())
        _overlay(axes[2], image, true_maps[i].numpy())
        _note_if_empty(axes[1], pred_maps[i].numpy())
        _note_if_empty(axes[2], true_maps[i].numpy())
        axes[0].set_title(f"true: {shorten(true_names[i], 22)}", fontsize=8)
        axes[1].set_title(
            f"pred: {shorten(pred_names[i], 14)} ({probs[i]:.2f})", fontsize=8, color="#c00000"
        )
        axes[2].set_title(f"map for {shorten(true_names[i], 18)}", fontsize=8)
    if im is not None:
        grid.colorbar(im, 3, n)
    grid.title(
        (title or f"{n} most confident mistakes")
        + "\ncolumns: image | Grad-CAM for the predicted class | for the true class"
    )
    return grid.fig


def mean_map_figure(
    mean_images: Sequence[torch.Tensor],
    mean_maps: Sequence[torch.Tensor],
    names: Sequence[str],
    counts: Sequence[int],
    *,
    title: str | None = None,
) -> Figure:
    """One column per class: the mean of its test images with the mean of their (0..1 scaled)
    Grad-CAM maps for that class over it, and the mean map alone below."""
    k = len(names)
    grid = _Grid(2, k, cell=2.6, title_h=0.6, caption_h=0.25)
    im = None
    for c in range(k):
        cam = mean_maps[c].numpy()
        top, bottom = grid.cell_axes(0, c), grid.cell_axes(1, c)
        im = _overlay(top, _hwc(mean_images[c]), cam)
        top.set_title(f"{shorten(names[c], 26)} ({counts[c]} images)", fontsize=9)
        bottom.imshow(cam, cmap=CMAP, vmin=0.0, vmax=1.0, interpolation="bilinear")
        bottom.set_xticks([])
        bottom.set_yticks([])
        bottom.set_title("mean map", fontsize=9)
    if im is not None:
        grid.colorbar(im, k, 2)
    grid.title(
        title
        or "Mean Grad-CAM per class\n(over each class's test images, map for that class, "
        "on the mean image)"
    )
    return grid.fig
