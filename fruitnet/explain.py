"""Class-activation maps: where a classifier looked (Grad-CAM through Captum).

    python -m fruitnet.predict ckpt_path=best.ckpt input=photos/ explain=true
    python -m fruitnet.eval ckpt_path=best.ckpt data=chest_xray data.root=...   # explain=auto

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a conv layer's output by the mean gradient
of the class score over that channel, sums the channels and keeps the positive part: a coarse map
(6 x 6 for the basic CNN at 100 px, 7 x 7 for ResNet-50 and ProxylessNAS at 224 px) of the regions
that raise the class score. For a global-average-pool head (ResNet-50, ProxylessNAS) it equals
CAM exactly; behind the basic CNN's flattening head it is an approximation (a position-specific
weight is replaced by the channel's mean gradient). Captum's `LayerGradCam` computes it (its own hooks, on the layer the
model registry names as ``ModelSpec.cam_layer``) and `LayerAttribution.interpolate` upsamples it
bilinearly to the model's input size. Captum is an optional extra (``pip install
'fruitnet[explain]'``): it is pure Python on top of torch, where the grad-cam package would bring
OpenCV, SciPy and scikit-learn along.

Images go in as predict and the datamodule feed them (uint8, already resized/cropped by
`fruitnet.data.io.load_image`), are normalised with the checkpoint's mean/std (`BatchTransform`,
norm=true or false alike) and go through the network in batches, in fp32, on the CPU or a GPU.
`to_image_geometry` puts an input-sized map back onto the original image: stretched back for
norm=false (squash), and onto the centre crop the network saw for norm=true (NaN outside it).

Figures use `matplotlib.figure.Figure` without pyplot, like `fruitnet.plots`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageOps
from torch import nn

from fruitnet.data.io import to_rgb
from fruitnet.data.transforms import BatchTransform
from fruitnet.models import get_model_spec
from fruitnet.plots import save_figure

__all__ = [
    "INSTALL_HINT",
    "CamExplainer",
    "ExplainUnavailableError",
    "available",
    "cam_layer_of",
    "display_image",
    "find_cam_layer",
    "mean_map_figure",
    "mistakes_cam_figure",
    "normalize_maps",
    "overlay_figure",
    "require",
    "to_image_geometry",
    "write_overlays",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fruitnet[explain]'"
# Overlays show the image at most this many pixels on its longer side (a full-size 8000 px photo
# would make a PNG of tens of MB); the map is laid onto that copy with the original's geometry.
DISPLAY_SIDE = 320
CMAP = "jet"
ALPHA = 0.45


class ExplainUnavailableError(ImportError):
    """Captum (the `explain` extra) is not installed."""


def require() -> Any:
    """``captum.attr``, or an error that says how to install it."""
    try:
        import captum.attr as attr
    except ImportError as err:
        raise ExplainUnavailableError(
            f"class-activation maps need Captum, which is not installed ({err}): {INSTALL_HINT}"
        ) from err
    return attr


def available() -> bool:
    try:
        require()
    except ExplainUnavailableError:
        return False
    return True


# --------------------------------------------------------------------------- target layer


def _contains_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


@torch.no_grad()
def find_cam_layer(net: nn.Module, input_size: int) -> str:
    """The dotted name of the module that holds an nn.Conv2d and is the last to return a 4-D
    output in one forward pass of a ``1 x 3 x input_size x input_size`` zero image: the last conv
    stage as a whole (``features`` of the basic CNN, ``layer4`` of ResNet-50). These probe hooks
    only record shapes; the attribution itself is Captum's."""
    finished: list[str] = []
    handles = []

    def record(name: str):
        def hook(module, args, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                finished.append(name)

        return hook

    for name, module in net.named_modules():
        if name and _contains_conv(module):
            handles.append(module.register_forward_hook(record(name)))
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    try:
        net.eval()
        net(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    if not finished:
        raise ValueError(f"{type(net).__name__} has no conv module with a 4-D output to explain")
    return finished[-1]


def cam_layer_of(net: nn.Module, model_name: str | None, input_size: int) -> str:
    """The registry's ``cam_layer`` for ``model_name`` when it names a module of ``net``, else the
    probe's choice (`find_cam_layer`): a model registered without one, or a searched net whose
    config has no such layer."""
    name = None
    if model_name:
        try:
            name = get_model_spec(model_name).cam_layer
        except KeyError:
            name = None
    if name:
        try:
            if isinstance(net.get_submodule(name), nn.Module):
                return name
        except AttributeError:
            pass
        log.info(
            "cam_layer %r is not a module of this %s; using the last conv stage", name, model_name
        )
    return find_cam_layer(net, input_size)


# --------------------------------------------------------------------------- maps


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each ``H x W`` map divided by its maximum, so it spans 0..1 (an all-zero map stays 0)."""
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return torch.where(peak > 0, maps / peak.clamp_min(1e-12), torch.zeros_like(maps))


class CamExplainer:
    """Grad-CAM maps for a `ClassifierModule` (or any classifier ``nn.Module``).

    ``module``: a ClassifierModule (its hparams give the model name, input size and preprocess)
    or a plain network, then with ``mean``/``std`` (default: none, as norm=false) and optionally
    ``model_name``. ``layer``: a dotted module name that overrides the registry's choice. The
    module is put in eval mode; parameters are not changed and get no ``.grad``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        layer: str | None = None,
        model_name: str | None = None,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        attr = require()
        hparams = getattr(module, "hparams", None) or {}
        net = getattr(module, "net", module)
        preprocess = dict(hparams.get("preprocess") or {})
        self.model_name = model_name or hparams.get("model_name")
        self.input_size = int(
            input_size or preprocess.get("size") or hparams.get("input_size") or 224
        )
        mean = mean if mean is not None else preprocess.get("mean", (0.0, 0.0, 0.0))
        std = std if std is not None else preprocess.get("std", (1.0, 1.0, 1.0))
        self.transform = BatchTransform(mean, std)
        if device is None:
            param = next(module.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.layer_name = layer or cam_layer_of(net, self.model_name, self.input_size)
        self.layer = net.get_submodule(self.layer_name)
        self._cam = attr.LayerGradCam(self.module, self.layer)
        self._interpolate = attr.LayerAttribution.interpolate

    def __repr__(self) -> str:
        return (
            f"CamExplainer(model={self.model_name!r}, layer={self.layer_name!r}, "
            f"input_size={self.input_size}, device={self.device})"
        )

    @torch.no_grad()
    def probs(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """uint8 ``N x 3 x S x S`` -> softmax ``N x classes`` (float32, CPU)."""
        out = [
            self.module(self.transform(chunk.to(self.device))).float().softmax(-1).cpu()
            for chunk in _batches(images, batch_size)
        ]
        return torch.cat(out)

    def maps(
        self,
        images: torch.Tensor,
        targets: int | Sequence[int] | torch.Tensor | None = None,
        *,
        batch_size: int = 32,
    ) -> torch.Tensor:
        """Grad-CAM for uint8 ``N x 3 x S x S`` images (as `load_image` decodes them), for one
        class per image (``targets``; None = the predicted class): float32 ``N x S x S`` on the
        CPU, non-negative, in the layer's units (`normalize_maps` scales each to 0..1)."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(
                f"expected uint8 N x 3 x H x W images, got {images.dtype} {list(images.shape)}"
            )
        n = images.shape[0]
        if targets is None:
            target = self.probs(images, batch_size).argmax(-1)
        else:
            target = torch.as_tensor(targets, dtype=torch.long).flatten()
            if target.numel() == 1:
                target = target.expand(n)
            if target.numel() != n:
                raise ValueError(f"{target.numel()} targets for {n} images")
        side = tuple(images.shape[-2:])
        step = max(1, int(batch_size))
        out = []
        # Captum needs autograd, also when the caller runs under no_grad or inference_mode.
        with torch.inference_mode(False), torch.enable_grad():
            for start in range(0, n, step):
                chunk = images[start : start + step].to(self.device)
                x = self.transform(chunk).requires_grad_(True)  # frozen weights still get a map
                cam = self._cam.attribute(
                    x, target=target[start : start + step].tolist(), relu_attributions=True
                )
                if cam.dim() != 4:
                    raise ValueError(
                        f"layer {self.layer_name!r} gives a {cam.dim()}-D output; Grad-CAM needs "
                        "a conv layer's N x C x H x W"
                    )
                cam = self._interpolate(cam.detach().float(), side, "bilinear")
                out.append(cam[:, 0].cpu())
        return torch.cat(out) if out else torch.zeros(0, *side)


def _batches(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    size = max(1, int(size))
    for start in range(0, images.shape[0], size):
        yield images[start : start + size]


# --------------------------------------------------------------------------- geometry


def input_region(height: int, width: int, preprocess: dict[str, Any]) -> tuple[float, ...]:
    """``(top, left, h, w)`` of the part of an ``height x width`` image that the network saw,
    in that image's pixels: all of it for norm=false (squashed), the centre crop for norm=true
    (shorter side resized to ``resize``, then ``crop`` x ``crop``)."""
    crop = preprocess.get("crop")
    if crop is None:
        return 0.0, 0.0, float(height), float(width)
    resize = preprocess.get("resize")
    scale = min(height, width) / float(resize) if resize else 1.0
    side = float(crop) * scale
    return (height - side) / 2, (width - side) / 2, side, side


def to_image_geometry(
    cam: torch.Tensor, height: int, width: int, preprocess: dict[str, Any]
) -> np.ndarray:
    """An input-sized ``S x S`` map -> ``height x width`` float32 on the original image's geometry
    (bilinear), NaN where the network saw nothing (outside a norm=true centre crop). Any
    ``height x width`` works, so the map can be drawn on a downscaled copy of a large image."""
    top, left, h, w = input_region(height, width, preprocess)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - top) / h * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - left) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    out = nnf.grid_sample(
        cam[None, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0, 0]
    outside = (gx.abs() > 1) | (gy.abs() > 1)
    return out.masked_fill(outside, float("nan")).numpy()


def display_image(path: str | Path, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image as a person sees it (EXIF rotation applied, any mode as RGB, as `load_image`
    reads it), downscaled to at most ``max_side`` px on the longer side: uint8 ``H x W x 3``."""
    with Image.open(path) as img:
        img.draft(None, (max_side, max_side))  # JPEG: decode at 1/2..1/8 scale
        img = ImageOps.exif_transpose(img)
        rgb = to_rgb(img)
        if max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return np.asarray(rgb).copy()


# --------------------------------------------------------------------------- figures


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


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


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
        axes[0].set_title(f"true: {_shorten(true_names[i], 22)}", fontsize=8)
        axes[1].set_title(
            f"pred: {_shorten(pred_names[i], 14)} ({probs[i]:.2f})", fontsize=8, color="#c00000"
        )
        axes[2].set_title(f"map for {_shorten(true_names[i], 18)}", fontsize=8)
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
        top.set_title(f"{_shorten(names[c], 26)} ({counts[c]} images)", fontsize=9)
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


# --------------------------------------------------------------------------- predict


def overlay_names(paths: Sequence[Path], root: Path | None) -> list[Path]:
    """Relative PNG names, one per image: ``<image stem>.png`` (under its subfolder when ``root``
    is a folder); ``<stem>_<ext>.png`` where two images would share a name."""
    rel = [Path(p).relative_to(root) if root is not None else Path(Path(p).name) for p in paths]
    plain = [r.with_suffix(".png") for r in rel]
    seen: dict[Path, int] = {}
    for name in plain:
        seen[name] = seen.get(name, 0) + 1
    return [
        r.with_name(f"{r.stem}_{r.suffix.lstrip('.')}.png") if seen[p] > 1 else p
        for r, p in zip(rel, plain, strict=True)
    ]


def write_overlays(
    predictor: Any,
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    batch_size: int = 32,
    max_side: int = DISPLAY_SIDE,
    dpi: int = 100,
) -> list[Path]:
    """One overlay PNG per predicted row (a `fruitnet.predict.Predictor`'s output) into
    ``out_dir``: the map of the top-1 class, drawn on the original image. Returns the files."""
    out_dir = Path(out_dir)
    explainer = CamExplainer(predictor.module, device=predictor.device)
    log.info("Grad-CAM on %s (%s)", explainer.layer_name, explainer.model_name)
    index = {name: i for i, name in enumerate(predictor.class_names)}
    root_path = Path(root).expanduser() if root is not None else None
    names = overlay_names([Path(r["path"]) for r in rows], root_path)
    preprocess = predictor.preprocess
    written: list[Path] = []
    step = max(1, int(batch_size))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        images = torch.stack([predictor.decode(Path(r["path"])) for r in chunk])
        targets = [index[r["topk"][0][0]] for r in chunk]
        maps = normalize_maps(explainer.maps(images, targets, batch_size=step))
        for r, cam, name in zip(chunk, maps, names[start : start + step], strict=True):
            shown = display_image(r["path"], max_side)
            h, w = shown.shape[:2]
            cls, prob = r["topk"][0]
            fig = overlay_figure(
                shown,
                to_image_geometry(cam, h, w, preprocess),
                f"predicted: {cls} ({prob:.2f})",
                subtitle=_shorten(Path(r["path"]).name, 60),
                region=input_region(h, w, preprocess),
            )
            written.append(save_figure(fig, out_dir / name, dpi=dpi))
    return written


def sample_evenly(indices: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` of ``indices`` (0 = all), evenly spaced, in order."""
    indices = list(indices)
    if limit <= 0 or len(indices) <= limit:
        return indices
    return [indices[math.floor(i * len(indices) / limit)] for i in range(limit)]


# --------------------------------------------------------------------------- eval


def wanted(setting: Any, logger: logging.Logger = log) -> bool:
    """An ``explain`` config value -> whether to make maps: true (the extra must be installed),
    false, or ``auto`` (on when Captum imports; otherwise one line says how to install it)."""
    value = str(setting).strip().lower() if setting is not None else "false"
    if value in ("true", "1", "yes", "on"):
        require()
        return True
    if value in ("false", "0", "no", "off", "none", "null"):
        return False
    if value != "auto":
        raise ValueError(f"explain must be true, false or auto, got {setting!r}")
    if available():
        return True
    logger.info("explain=auto: no Grad-CAM maps (%s adds them)", INSTALL_HINT)
    return False


def class_mean_maps(
    explainer: CamExplainer,
    dataset: Any,
    labels: torch.Tensor,
    num_classes: int,
    *,
    limit: int = 200,
    batch_size: int = 32,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Per class: the mean image and the mean 0..1 map for that class over (at most ``limit``,
    evenly spaced) test images of that class. ``dataset[i]`` is ``(uint8 3 x S x S, label)``."""
    images, maps, counts = [], [], []
    for c in range(num_classes):
        chosen = sample_evenly((labels == c).nonzero().flatten().tolist(), limit)
        image_sum: torch.Tensor | None = None
        map_sum: torch.Tensor | None = None
        for start in range(0, len(chosen), max(1, batch_size)):
            batch = torch.stack([dataset[i][0] for i in chosen[start : start + batch_size]])
            m = normalize_maps(explainer.maps(batch, c, batch_size=batch_size)).sum(0)
            s = batch.double().sum(0)
            image_sum = s if image_sum is None else image_sum + s
            map_sum = m if map_sum is None else map_sum + m
        n = max(len(chosen), 1)
        if image_sum is None or map_sum is None:
            side = explainer.input_size
            image_sum, map_sum = torch.zeros(3, side, side), torch.zeros(side, side)
        images.append((image_sum / n).round().clamp(0, 255).to(torch.uint8))
        maps.append(map_sum / n)
        counts.append(len(chosen))
    return images, maps, counts
