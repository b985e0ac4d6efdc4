"""Image files -> uint8 ``3 x S x S`` RGB tensors, and the cheap validity check used at scan time.

Every dataset, the decoded-image cache, predict and export read pixels through `load_image`, so
one image gives the same bytes whichever path it took.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from fruitnet.settings import has_image_extension

__all__ = [
    "DECODE_VERSION",
    "MAX_PIXELS",
    "CorruptImageError",
    "check_image",
    "is_image_file",
    "load_image",
    "resize_crop",
    "to_rgb",
]

# Bump when load_image's output for the same file and spec changes, so caches keyed on the spec
# (decoded images, dataset stats) are rebuilt instead of reused.
DECODE_VERSION = "1"

# Pillow warns above its MAX_IMAGE_PIXELS (89 Mpx by default) with a bare `warnings.warn(` line that
# names no file, and refuses above twice that. Photos from modern cameras and scanned X-rays
# (8000 x 12000 = 96 Mpx) are real data, so fruitnet reads images up to MAX_PIXELS and refuses a
# larger one itself, naming the file and its size, once the header is read and before any pixel
# is decoded (`_open`); Pillow's own check is off, so it has nothing to print.
MAX_SIDE = 16384
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # 268 Mpx: anything bigger is far more likely a bomb than a photo
Image.MAX_IMAGE_PIXELS = None

# Modes holding more than 8 bits per sample; Pillow's convert("L") clips them instead of scaling.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class CorruptImageError(ValueError):
    """An image file that cannot be decoded. ``others`` lists further (path, reason) pairs."""

    def __init__(
        self,
        path: str | os.PathLike,
        reason: str,
        others: list[tuple[Path, str]] | None = None,
        hint: str = "",
    ) -> None:
        self.path = Path(path)
        self.reason = reason
        self.others = list(others or [])
        self.hint = hint
        msg = f"corrupt image {self.path}: {reason}"
        if self.others:
            listed = "\n".join(f"  {p}: {r}" for p, r in self.others[:20])
            msg += f"\n{len(self.others)} more corrupt file(s):\n{listed}"
            if len(self.others) > 20:
                msg += f"\n  ... and {len(self.others) - 20} more"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)

    def __reduce__(self):
        # Exceptions pickle via their args; keep the structured fields across worker processes.
        return (type(self), (self.path, self.reason, self.others, self.hint))


def is_image_file(name: str | os.PathLike) -> bool:
    """True for a visible file name with an image extension (`fruitnet.settings.IMAGE_EXTENSIONS`).

    Hidden names are refused because macOS archives carry ``._photo.jpg`` AppleDouble files that
    have a .jpg name but hold resource-fork metadata.
    """
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and has_image_extension(base)


def check_image(path: str | os.PathLike) -> None:
    """Raise `CorruptImageError` unless ``path`` fully decodes; cheap enough for every file.

    JPEGs decode at 1/8 scale (`Image.draft`): that still walks the whole entropy-coded stream, so
    truncation is caught, at a fraction of the cost of a full decode.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CorruptImageError(path, f"cannot read file ({e.strerror or e})") from e
    if size == 0:
        raise CorruptImageError(path, "empty file (0 bytes)")
    try:
        with _open(path) as img:
            if img.format == "JPEG":
                img.draft(None, (1, 1))
            img.load()
    except CorruptImageError:
        raise
    except UnidentifiedImageError as e:
        raise CorruptImageError(path, f"not an image file ({_sniff(path)})") from e
    except (OSError, SyntaxError, ValueError) as e:
        # Pillow reports truncation and bad chunks as OSError, broken headers as SyntaxError.
        raise CorruptImageError(path, f"cannot decode: {e}") from e


def _open(path: str | os.PathLike) -> Image.Image:
    """`Image.open` (the header only), refusing an image over `MAX_PIXELS`."""
    img = Image.open(path)
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise CorruptImageError(
            path,
            f"too large to decode safely: {width} x {height} px ({width * height / 1e6:.0f} Mpx); "
            f"fruitnet reads images up to {MAX_PIXELS / 1e6:.0f} Mpx ({MAX_SIDE} x {MAX_SIDE}), "
            "so downscale it",
        )
    return img


def _sniff(path: Path) -> str:
    """A short hint at what a non-image file holds, e.g. an HTML error page saved as .jpg."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return "unreadable"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"looks like text: {head.decode('ascii')[:24]!r}"
    return f"unknown format, starts with {head[:8].hex()}"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB; transparency is composited on white, wide modes rescaled."""
    if img.mode in _WIDE_MODES:
        img = _wide_to_l(img)
    if img.mode == "P" or (img.mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        # White, not black: Fruits-360 and most product shots sit on white, and cut-out PNGs are
        # meant to be seen on a light page.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        # CMYK, YCbCr, LAB, HSV, 1, L: Pillow's own converters are correct for these.
        img = img.convert("RGB")
    return img


def _wide_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode == "F":
        # Float images are usually 0..1 intensities; anything larger is taken as 0..255.
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(arr.astype(np.float64) * scale), 0, 255)
        return Image.fromarray(np.rint(out).astype(np.uint8), mode="L")
    arr = arr.astype(np.int64)
    # "I" is 32-bit; Pillow uses it for some 16-bit PNG/TIFF files too. Values above 16 bits mean
    # a genuinely wider range, so scale by the observed maximum in that rare case.
    full = 65535 if int(arr.max(initial=0)) <= 65535 else int(arr.max())
    out = (np.clip(arr, 0, None) * 255 + full // 2) // full
    return Image.fromarray(out.astype(np.uint8), mode="L")


def resize_crop(
    img: torch.Tensor, *, resize: int | None, crop: int | None, size: int
) -> torch.Tensor:
    """uint8 ``3 x H x W`` -> uint8 ``3 x size x size`` following a preprocess spec.

    ``crop`` set: shorter side to ``resize`` (when given), then center crop ``crop``.
    ``crop`` None: squash to ``size x size`` (``resize`` is then the same square side).
    """
    if crop is not None:
        if resize is not None:
            img = F.resize(img, [resize], antialias=True)
        img = F.center_crop(img, [crop, crop])
    if tuple(img.shape[-2:]) != (size, size):
        img = F.resize(img, [size, size], antialias=True)
    return img


def load_image(
    path: str | os.PathLike, *, resize: int | None = None, crop: int | None = None, size: int
) -> torch.Tensor:
    """Decode ``path`` into a uint8 ``3 x size x size`` RGB tensor (see `resize_crop`)."""
    with _open(path) as img:
        if img.format == "JPEG":
            # Let libjpeg downscale by 2/4/8 while decoding when the image is much bigger than
            # needed (an 8000 px photo decodes 64x faster); the result never drops below target.
            target = resize if (crop is not None and resize is not None) else (crop or size)
            img.draft(None, (target, target))
        ImageOps.exif_transpose(img, in_place=True)  # phone photos store rotation in EXIF only
        arr = np.asarray(to_rgb(img))
    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # HWC -> CHW copy
    return _contiguous(resize_crop(tensor, resize=resize, crop=crop, size=size))


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    # Copies go through numpy, single-threaded: torch spreads a strided copy this small over its
    # intra-op threads, and with num_workers=0 on a busy 2-core box that was measured 20x slower.
    if t.is_contiguous():
        return t
    return torch.from_numpy(np.ascontiguousarray(t.numpy()))
