"""Preprocessing: the per-image resize/crop spec, and the batch-level float/augment/normalize step.

Per image (in `fruitnet.data.io.load_image`, on the loader side) only the geometry is fixed, so
datasets and the decoded-image cache hold uint8. Everything else runs on whole batches after they
reach the device (`BatchTransform`, called from the datamodule's ``on_after_batch_transfer``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import nn
from torchvision.transforms.v2 import functional as F

from fruitnet.models import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "AUGMENTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchTransform",
    "check_crop_fraction",
    "preprocess_spec",
]

# none: the study; basic: flips, small affine, colour jitter (Fruits-360); crop_erase: random
# resized crops, erasing and intensity changes, no flips (X-rays: the heart is on one side),
# against shortcuts in the border and corners (markers, text, collimation edges)
AUGMENTS = ("none", "basic", "crop_erase")


def preprocess_spec(norm: bool, image_size: int | None = None, crop_fraction: float = 1.0) -> dict:
    """The preprocessing dict stored in checkpoints (see docs/ARCHITECTURE.md).

    ``norm=True``: the ProxylessNAS/ImageNet eval pipeline: shorter side 256, center crop 224,
    ImageNet mean/std. ``norm=False``: squash to ``image_size x image_size``, values /255 only;
    with ``crop_fraction`` < 1 the shorter side goes to ``image_size / crop_fraction`` and the
    centre ``image_size`` square is kept (the norm=true geometry at another size), so a film's
    border and corner markers are cut off the same way in training, eval, predict and export.
    ``crop`` None means ``resize`` is a square side (see `fruitnet.data.io.resize_crop`).
    """
    fraction = check_crop_fraction(crop_fraction, norm)
    if norm:
        return {
            "resize": 256,
            "crop": 224,
            "size": 224,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }
    if image_size is None or int(image_size) < 1:
        raise ValueError(f"norm=false needs a positive image_size, got {image_size!r}")
    size = int(image_size)
    if fraction < 1.0:
        resize, crop = round(size / fraction), size
    else:
        resize, crop = size, None
    return {"resize": resize, "crop": crop, "size": size, "mean": [0.0] * 3, "std": [1.0] * 3}


def check_crop_fraction(crop_fraction: float | None, norm: bool) -> float:
    """``data.crop_fraction`` as a float in (0, 1]; norm=true keeps its own 256/224 crop."""
    fraction = 1.0 if crop_fraction is None else float(crop_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.crop_fraction must be in (0, 1], got {crop_fraction!r}")
    if norm and fraction < 1.0:
        raise ValueError(
            f"data.crop_fraction={crop_fraction} needs norm=false: norm=true has its own "
            "centre crop (shorter side 256, crop 224)"
        )
    return fraction


def image_spec(spec: dict) -> dict:
    """The geometry part of a preprocess dict, as keyword args for `load_image`/`resize_crop`."""
    return {"resize": spec["resize"], "crop": spec["crop"], "size": spec["size"]}


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `adjust_sharpness` of the float batch ``x`` with one factor per image: its
    3x3 smoothing (factor 0) blended back toward and beyond each image by that image's factor."""
    smoothed = F.adjust_sharpness(x, 0.0)
    f = factor.to(x.dtype).view(-1, 1, 1, 1)
    return (smoothed + f * (x - smoothed)).clamp_(0.0, 1.0)


class BatchTransform(nn.Module):
    """uint8 ``N x 3 x H x W`` -> normalized float32, with optional training augmentation.

    ``augment="basic"`` draws its parameters per sample: a torchvision v2 transform draws one set
    per call, so applied to a batch it would flip or rotate every image the same way.
    ``augment="crop_erase"`` (per sample too): a random resized crop (side 70-100 % of the
    image's, anywhere inside it, +-``max_rotate`` degrees) stretched back to the input size, so
    the border and a corner marker are often cut off or moved; brightness and contrast
    x(1 +- ``jitter``); and with probability ``erase_p`` one rectangle (2-20 % of the area, the
    image's mean) erased, so no small region can carry the decision alone.
    ``sharpness`` > 0 (with either augment): each image's sharpness times a factor drawn from
    [1 - ``sharpness``, 1 + ``sharpness``], as torchvision's `adjust_sharpness` (0 = smoothed,
    1 = as is, 2 = sharpened), so how sharp a film is stops telling its class (bench/CHEST_SHARPNESS.md).
    Mean/std are kept as plain floats, so the module works on whatever device the batch is on
    without being registered anywhere.
    """

    def __init__(
        self,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        augment: str = "none",
        channels_last: bool = False,
        max_rotate: float = 10.0,
        max_translate: float = 0.05,
        scale: tuple[float, float] = (0.9, 1.1),
        jitter: float = 0.2,
        crop_side: tuple[float, float] = (0.7, 1.0),
        erase_p: float = 0.5,
        erase_area: tuple[float, float] = (0.02, 0.2),
        sharpness: float = 0.0,
    ) -> None:
        super().__init__()
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        if isinstance(sharpness, bool) or not isinstance(sharpness, int | float):
            raise ValueError(f"data.sharpness must be a number in [0, 1], got {sharpness!r}")
        if not 0.0 <= sharpness <= 1.0:
            raise ValueError(f"data.sharpness must be a number in [0, 1], got {sharpness!r}")
        if sharpness and augment == "none":
            raise ValueError(
                f"data.sharpness={sharpness} is a training augmentation: it needs data.augment="
                "basic or crop_erase (augment=none trains on the images as they are)"
            )
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.augment = augment
        self.channels_last = channels_last
        self.max_rotate = max_rotate
        self.max_translate = max_translate
        self.scale = scale
        self.jitter = jitter
        self.crop_side = crop_side
        self.erase_p = erase_p
        self.erase_area = erase_area
        self.sharpness = float(sharpness)
        self._identity_norm = self.mean == [0.0] * 3 and self.std == [1.0] * 3

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"BatchTransform expects a uint8 batch, got {x.dtype}")
        if x.ndim == 3:
            x = x.unsqueeze(0)
        x = F.to_dtype(x, torch.float32, scale=True)
        if self.channels_last:
            # Reordered as float: a uint8 reorder is 4x slower here despite a quarter of the bytes
            # (128 x 3 x 100 x 100 on the CPU: 2.1 ms this way, 7.1 ms reordering the uint8 first).
            x = x.contiguous(memory_format=torch.channels_last)
        if train and self.augment == "basic":
            x = self._basic(x)
        elif train and self.augment == "crop_erase":
            x = self._crop_erase(x)
        if train and self.sharpness:
            x = self._sharpen(x)
        if not self._identity_norm:
            x = F.normalize(x, mean=self.mean, std=self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _basic(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        flip = torch.rand(n, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = self._affine(x)
        return self._color_jitter(x).clamp_(0.0, 1.0)

    def _crop_erase(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        lo, hi = self.crop_side
        side = lo + torch.rand(n, device=dev) * (hi - lo)  # of the image's side, in (0, 1]
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.max_rotate)
        # The crop's centre anywhere that keeps it inside the image (normalised coordinates)
        shift = (torch.rand(n, 2, device=dev) * 2 - 1) * (1 - side)[:, None]
        cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = nnf.affine_grid(theta, list(x.shape), align_corners=False)
        x = nnf.grid_sample(x, grid, padding_mode="border", align_corners=False)

        def factors() -> torch.Tensor:
            return 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * self.jitter

        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * factors() + mean * factors()  # contrast, then brightness
        return self._erase(x.clamp_(0.0, 1.0))

    def _sharpen(self, x: torch.Tensor) -> torch.Tensor:
        f = 1 + (torch.rand(x.shape[0], device=x.device) * 2 - 1) * self.sharpness
        return adjust_sharpness(x, f)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        """One rectangle per chosen image set to the image's mean (random erasing, per sample)."""
        n, _, h, w = x.shape
        dev = x.device
        lo, hi = self.erase_area
        area = lo + torch.rand(n, device=dev) * (hi - lo)
        aspect = torch.exp((torch.rand(n, device=dev) * 2 - 1) * math.log(3.0))
        eh = (area * aspect).sqrt().clamp(max=1.0) * h
        ew = (area / aspect).sqrt().clamp(max=1.0) * w
        top = torch.rand(n, device=dev) * (h - eh)
        left = torch.rand(n, device=dev) * (w - ew)
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        inside = (ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
        inside = inside & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None])
        chosen = torch.rand(n, device=dev) < self.erase_p
        mask = (inside & chosen[:, None, None])[:, None]
        return torch.where(mask, x.mean((1, 2, 3), keepdim=True), x)

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        dev = x.device
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.max_rotate)
        lo, hi = self.scale
        zoom = lo + torch.rand(n, device=dev) * (hi - lo)
        shift = (torch.rand(n, 2, device=dev) * 2 - 1) * (2 * self.max_translate)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = nnf.affine_grid(theta, list(x.shape), align_corners=False)
        # Border padding repeats the edge: white for Fruits-360, dark for X-rays; a constant fill
        # would paint a frame that no test image has.
        return nnf.grid_sample(x, grid, padding_mode="border", align_corners=False)

    def _color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]

        def factors() -> torch.Tensor:
            return 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * self.jitter

        x = x * factors()  # brightness
        mean = F.rgb_to_grayscale(x).mean((1, 2, 3), keepdim=True)
        x = (x - mean) * factors() + mean  # contrast
        gray = F.rgb_to_grayscale(x)
        return gray + (x - gray) * factors()  # saturation

    def extra_repr(self) -> str:
        return (
            f"mean={self.mean}, std={self.std}, augment={self.augment!r}, "
            f"channels_last={self.channels_last}, sharpness={self.sharpness}"
        )
