"""Where the network looked, on the image a person sees: the part of the image the network saw,
the input-sized map put back on the original geometry, and the image as displayed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image, ImageOps

from fruitnet.data.io import to_rgb

# Overlays show the image at most this many pixels on its longer side (a full-size 8000 px photo
# would make a PNG of tens of MB); the map is laid onto that copy with the original's geometry.
DISPLAY_SIDE = 320


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
