"""Small image trees written on the fly for the data tests (JPEGs of one colour per class)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 200, 40), (150, 40, 160)]


# --------------------------------------------------------------------------- tree builders


def write_jpeg(path: Path, color=(200, 30, 30), size=(24, 24), **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG", quality=90, **save)
    return path


def make_tree(root: Path, spec: dict[str, dict[str, int]], size=(24, 24)) -> Path:
    """``{split_dir: {class: n_images}}``; split_dir "" puts classes directly under root."""
    for split, classes in spec.items():
        for k, (name, n) in enumerate(sorted(classes.items())):
            for i in range(n):
                color = COLORS[k % len(COLORS)]
                write_jpeg(root / split / name / f"{i}_100.jpg", color, size)
    return root


def fruits_tree(root: Path, train=None, test=None, size=(24, 24)) -> Path:
    train = train or {"Apple Red": 6, "Banana": 6, "Cherry 1": 6}
    test = test or dict.fromkeys(train, 2)
    return make_tree(root, {"Training": train, "Test": test}, size)


def labels_by_class(samples, class_names):
    return {(p.parent.name, class_names[y]) for p, y in samples}


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    """``img`` as the bytes of a ``fmt`` file."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()
