"""fruitnet.data image io: every mode and size decodes to RGB, huge files, corrupt files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from image_trees import encoded, write_jpeg
from PIL import Image

from fruitnet.data import (
    CorruptImageError,
    check_image,
    is_image_file,
    load_image,
)

# --------------------------------------------------------------------------- io


def test_is_image_file():
    assert is_image_file("a.jpg") and is_image_file("b.JPEG") and is_image_file("c.png")
    for name in ("._a.jpg", ".DS_Store", "Thumbs.db", "README.md", "LICENSE", "x.txt", "y.gif"):
        assert not is_image_file(name), name


def _mode_images(tmp: Path) -> dict[str, Path]:
    files = {}
    gray = Image.linear_gradient("L").resize((40, 30))
    files["gray.jpg"] = gray
    rgba = Image.new("RGBA", (30, 40), (255, 0, 0, 0))  # fully transparent red
    files["rgba.png"] = rgba
    files["palette.png"] = Image.new("RGB", (30, 30), (10, 200, 10)).convert("P")
    files["la.png"] = Image.new("LA", (20, 20), (0, 0))
    files["cmyk.jpg"] = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    files["bilevel.png"] = Image.new("1", (16, 16), 1)
    wide = np.full((20, 20), 65535, dtype=np.uint16)
    wide[:, :10] = 32896  # 128 * 257: must map to 128, not clip to 255
    files["gray16.png"] = Image.fromarray(wide)
    paths = {}
    for name, img in files.items():
        p = tmp / name
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        p.write_bytes(encoded(img, fmt))
        paths[name] = p
    return paths


@pytest.mark.parametrize("spec", [dict(size=32), dict(resize=40, crop=32, size=32)])
def test_load_image_modes(tmp_path, spec):
    for name, path in _mode_images(tmp_path).items():
        x = load_image(path, **spec)
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 32, 32), name
        assert x.is_contiguous(), name


def test_load_image_mode_values(tmp_path):
    paths = _mode_images(tmp_path)
    # Transparent pixels sit on white, not black.
    assert load_image(paths["rgba.png"], size=8).min() == 255
    assert load_image(paths["la.png"], size=8).min() == 255
    cmyk = load_image(paths["cmyk.jpg"], size=8).float().mean((1, 2))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # C=0 M=Y=255 is red
    gray = load_image(paths["gray16.png"], size=20)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert gray[0, 5, 2].item() == 128 and gray[0, 5, 15].item() == 255


def test_load_huge_jpeg_uses_draft(tmp_path):
    path = tmp_path / "huge.jpg"
    write_jpeg(path, (10, 120, 250), (8000, 6000))
    t0 = time.perf_counter()
    x = load_image(path, resize=256, crop=224, size=224)
    assert time.perf_counter() - t0 < 5.0
    assert tuple(x.shape) == (3, 224, 224) and x.dtype == torch.uint8
    assert abs(x[2].float().mean().item() - 250) < 3
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS >= 8000 * 12000


def test_load_large_png(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (8000, 200), (0, 0, 255)).save(path)
    x = load_image(path, size=64)
    assert tuple(x.shape) == (3, 64, 64) and x[2].min() == 255


def test_check_image_detects_bad_files(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", size=(64, 64))
    check_image(good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "page.jpg"
    text.write_text("<html>404 Not Found</html>\n")
    data = encoded(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    for path, words in [(empty, "empty"), (text, "text"), (truncated, "truncated")]:
        with pytest.raises(CorruptImageError, match=words) as err:
            check_image(path)
        assert str(path) in str(err.value) and err.value.path == path
