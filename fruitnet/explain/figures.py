"""Grad-CAM figures: one image with its map, the mistakes grid and the per-class mean maps.

Built on `matplotlib.figure.Figure` without pyplot, like `fruitnet.plots`. Plain maps (0..1) are
drawn in jet: red = strongest evidence for the class, blue = none. Signed maps of a logit
difference (-1..1, `CamExplainer.maps(contrast=True)`) in red-white-blue: red = evidence for the
class named, blue = evidence for the other class, white = neither. Every figure says which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fruitnet.explain.focus import CENTRE, central_share
from fruitnet.explain.gradcam import normalize_maps
from fruitnet.plots import shorten

CMAP = "jet"
SIGNED_CMAP = "RdBu_r"  # diverging: blue -1, white 0, red +1
ALPHA = 0.45
PLAIN_KEY = "red: strongest evidence for the class, blue: none"


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)
    return np.asarray(image)


def _map_style(signed: bool) -> dict[str, Any]:
    if signed:
        return {"cmap": SIGNED_CMAP, "vmin": -1.0, "vmax": 1.0}
    return {"cmap": CMAP, "vmin": 0.0, "vmax": 1.0}


def _overlay(ax, image: np.ndarray, cam: np.ndarray | None, signed: bool = False) -> Any:
    ax.imshow(image, interpolation="bilinear")
    im = None
    if cam is not None:
        im = ax.imshow(
            np.ma.masked_invalid(cam), alpha=ALPHA, interpolation="bilinear", **_map_style(signed)
        )
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _note_if_empty(ax, cam: np.ndarray, signed: bool = False) -> None:
    """Grad-CAM keeps only positive evidence; an all-zero map would otherwise pass for a map."""
    if not np.nanmax(np.abs(cam), initial=0.0) > 0:
        ax.text(
            0.5, 0.5, "no evidence\neither way" if signed else "no positive\nevidence",
            transform=ax.transAxes, ha="center", va="center", fontsize=8, color="white",
        )  # fmt: skip


def _colorbar(fig: Figure, cax: Any, ends: tuple[str, str] | None = None) -> None:
    """The colour bar, opaque (the overlays are translucent), its ends named: what red and blue
    mean. ``ends``: the (blue, red) names of a signed map's ends; None for a plain 0..1 map."""
    style = _map_style(ends is not None)
    scale = Normalize(style["vmin"], style["vmax"])
    bar = fig.colorbar(ScalarMappable(scale, style["cmap"]), cax=cax)
    if ends is not None:
        bar.set_ticks([-1.0, 0.0, 1.0], labels=[ends[0], "0", ends[1]])
    else:
        bar.set_ticks([0.0, 0.5, 1.0], labels=["none", "0.5", "peak"])
    cax.tick_params(labelsize=7)


def overlay_figure(
    image: np.ndarray | torch.Tensor,
    cam: np.ndarray,
    title: str,
    *,
    subtitle: str | None = None,
    region: tuple[float, ...] | None = None,
) -> Figure:
    """Two panels: the image, and the image with the 0..1 ``cam`` blended over it (jet; NaN
    transparent) with its central-mass share (`fruitnet.explain.focus`, the central box dashed),
    a colour bar, the title above; ``region`` ``(top, left, h, w)`` outlines the
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
    _overlay(ax_cam, image, cam)
    _note_if_empty(ax_cam, cam)
    ax_image.set_title("image", fontsize=9)
    # The share of the map's mass in the central box (fruitnet.explain.focus), drawn dashed
    share = float(central_share(torch.as_tensor(np.asarray(cam, dtype=np.float64))))
    ax_cam.set_title(
        f"Grad-CAM, central share {share:.2f}" if math.isfinite(share) else "Grad-CAM", fontsize=9
    )
    if math.isfinite(share):
        _centre_box(ax_cam, cam.shape)
    if region is not None and (region[0] > 0.5 or region[1] > 0.5):
        r_top, r_left, rh, rw = region
        for ax in (ax_image, ax_cam):
            ax.add_patch(
                Rectangle(
                    (r_left - 0.5, r_top - 0.5), rw, rh, fill=False, ls="--", lw=1, ec="white"
                )
            )
    cax = axes(left + 2 * panel + gap + 0.12, bar)
    _colorbar(fig, cax)
    heading = title if subtitle is None else f"{title}\n{subtitle}"
    fig.text(0.5, 1 - 0.08 / height, heading, ha="center", va="top", fontsize=10)
    return fig


class _Grid:
    """Fixed layout in inches (matplotlib's automatic layouts leave tall grids with a wide empty
    band under the title): ``rows x cols`` square cells, a caption line above each, a colour bar
    on the right, the title's lines on top."""

    def __init__(self, rows: int, cols: int, cell: float, caption_h: float, title: str):
        title_h = 0.15 + 0.17 * (title.count("\n") + 1)
        self.cell, self.caption_h, self.title_h = cell, caption_h, title_h
        self.gap, self.left, self.bar, self.right = 0.08, 0.1, 0.12, 0.45
        self.width = self.left + cols * (cell + self.gap) + 0.1 + self.bar + self.right
        self.height = title_h + rows * (caption_h + cell) + 0.1
        self.fig = Figure(figsize=(self.width, self.height))
        self.fig.text(0.5, 1 - 0.08 / self.height, title, ha="center", va="top", fontsize=10)

    def _axes(self, x: float, y_top: float, w: float, h: float):
        return self.fig.add_axes(
            (x / self.width, 1 - (y_top + h) / self.height, w / self.width, h / self.height)
        )

    def cell_axes(self, r: int, c: int):
        x = self.left + c * (self.cell + self.gap)
        y = self.title_h + r * (self.caption_h + self.cell) + self.caption_h
        return self._axes(x, y, self.cell, self.cell)

    def colorbar(self, cols: int, rows: int, ends: tuple[str, str] | None = None) -> None:
        h = min(rows * (self.caption_h + self.cell) - self.caption_h, 3.0)
        x = self.left + cols * (self.cell + self.gap) + 0.1
        cax = self._axes(x, self.title_h + self.caption_h, self.bar, h)
        _colorbar(self.fig, cax, ends)


def mistakes_cam_figure(
    images: torch.Tensor,
    pred_maps: torch.Tensor,
    true_maps: torch.Tensor | None,
    true_names: Sequence[str],
    pred_names: Sequence[str],
    probs: Sequence[float],
    *,
    title: str | None = None,
) -> Figure:
    """One row per mistake: the image, Grad-CAM for the predicted class, Grad-CAM for the true
    class (each map scaled to 0..1 on its own). ``images`` uint8 ``N x 3 x S x S``, maps
    ``N x S x S``. ``true_maps=None`` (two classes): ``pred_maps`` are the signed maps of
    logit(predicted) - logit(true) (`CamExplainer.maps(contrast=True)`), one column, red for the
    predicted class and blue for the true one."""
    n = images.shape[0]
    signed = true_maps is None
    maps = [normalize_maps(pred_maps)] + ([] if signed else [normalize_maps(true_maps)])
    cols = 1 + len(maps)
    if signed:
        key = (
            "columns: image | Grad-CAM of logit(pred) - logit(true)\n"
            "red: evidence for the predicted class,\nblue: evidence for the true class"
        )
    else:
        key = f"columns: image | Grad-CAM for the predicted class | for the true class\n{PLAIN_KEY}"
    text = (title or f"{n} most confident mistakes") + "\n" + key
    grid = _Grid(n, cols, cell=1.7, caption_h=0.22, title=text)
    for i in range(n):
        image = _hwc(images[i])
        axes = [grid.cell_axes(i, c) for c in range(cols)]
        _overlay(axes[0], image, None)
        for ax, m in zip(axes[1:], maps, strict=True):
            _overlay(ax, image, m[i].numpy(), signed)
            _note_if_empty(ax, m[i].numpy(), signed)
        axes[0].set_title(f"true: {shorten(true_names[i], 22)}", fontsize=8)
        axes[1].set_title(
            f"pred: {shorten(pred_names[i], 14)} ({probs[i]:.2f})", fontsize=8, color="#c00000"
        )
        if not signed:
            axes[2].set_title(f"map for {shorten(true_names[i], 18)}", fontsize=8)
    if n:
        grid.colorbar(cols, n, ("true\nclass", "pred.\nclass") if signed else None)
    return grid.fig


def mean_map_figure(
    mean_images: Sequence[torch.Tensor],
    mean_maps: Sequence[torch.Tensor],
    names: Sequence[str],
    counts: Sequence[int],
    *,
    title: str | None = None,
    signed: bool = False,
    central: dict[str, Any] | None = None,
) -> Figure:
    """One column per class: the mean of its test images with the mean of their (0..1 scaled)
    Grad-CAM maps for that class over it, and the mean map alone below. ``signed``: the maps
    are signed maps of logit(class) - logit(other) (-1..1, `class_mean_maps(contrast=True)`):
    red for the column's class, blue for the other. ``central``: the maps' central-mass shares
    (`fruitnet.explain.focus.summarize`), written under each class and in the title, the
    central box dashed on the maps."""
    k = len(names)
    if central is not None:
        overall = _share_text(central.get("overall"))
        line = f"central-mass share (dashed box, {CENTRE**2:.0%} of the area): {overall} over all"
        title = f"{title}\n{line}" if title else line
    if signed:
        key = (
            "Mean Grad-CAM of logit(class) - logit(other class)\n"
            "over each class's test images, on their mean image\n"
            "red: evidence for the column's class, blue: for the other"
        )
    else:
        key = (
            "Mean Grad-CAM per class: the map for that class\n"
            f"over the class's test images, on their mean image\n{PLAIN_KEY}"
        )
    # A caller's title goes above the key: the figure always says what the colours mean.
    grid = _Grid(2, k, cell=2.6, caption_h=0.25, title=f"{title}\n{key}" if title else key)
    for c in range(k):
        cam = mean_maps[c].numpy()
        top, bottom = grid.cell_axes(0, c), grid.cell_axes(1, c)
        _overlay(top, _hwc(mean_images[c]), cam, signed)
        top.set_title(f"{shorten(names[c], 26)} ({counts[c]} images)", fontsize=9)
        bottom.imshow(cam, interpolation="bilinear", **_map_style(signed))
        bottom.set_xticks([])
        bottom.set_yticks([])
        bottom.set_title(f"mean map for {shorten(names[c], 18)}", fontsize=9)
        if central is not None:
            share = _share_text((central.get("per_class") or {}).get(names[c]))
            bottom.set_xlabel(f"central-mass share {share}", fontsize=9)
            for ax in (top, bottom):
                _centre_box(ax, cam.shape)
    if k:
        grid.colorbar(k, 2, ("other\nclass", "this\nclass") if signed else None)
    return grid.fig


def _share_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _centre_box(ax, shape: tuple[int, ...]) -> None:
    """The central box of `fruitnet.explain.focus` (half the height x half the width), dashed."""
    h, w = shape[-2], shape[-1]
    box = Rectangle((w / 4 - 0.5, h / 4 - 0.5), w / 2, h / 2, fill=False, ls="--", lw=1, ec="black")
    ax.add_patch(box)
