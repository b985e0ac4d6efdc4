"""The embedded synthetic dataset: deterministic, generated once, atomic, loads as Fruits-360."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import fruitnet.data.synthetic as synth
from fruitnet.data import SyntheticDataModule, generate_synthetic_fruits

SMALL = dict(num_classes=4, train_per_class=5, test_per_class=2, image_size=100)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generation_is_deterministic(tmp_path):
    a = generate_synthetic_fruits(tmp_path / "a", **SMALL)
    b = generate_synthetic_fruits(tmp_path / "b", **SMALL)
    assert a.name == b.name and "v1" in a.name
    da, db = tree_digest(a), tree_digest(b)
    assert da == db and len(da) == 4 * (5 + 2) + 1  # + the completion marker
    other = generate_synthetic_fruits(tmp_path / "c", **{**SMALL, "seed": 1})
    assert tree_digest(other) != da


def test_tree_is_fruits_shaped(tmp_path):
    root = generate_synthetic_fruits(tmp_path, **SMALL)
    classes = sorted(p.name for p in (root / "Training").iterdir())
    assert classes == sorted(p.name for p in (root / "Test").iterdir())
    assert (
        all(name.startswith("Synthetic ") for name in classes) and "Synthetic Apple Red" in classes
    )
    files = sorted((root / "Training" / classes[0]).iterdir())
    assert [f.name for f in files][:2] == ["0_100.jpg", "1_100.jpg"]
    with Image.open(files[0]) as img:
        assert img.format == "JPEG" and img.size == (100, 100) and img.mode == "RGB"
        assert img.getpixel((0, 0)) >= (240, 240, 240)  # white background corner


def test_generation_is_idempotent(tmp_path, monkeypatch):
    root = generate_synthetic_fruits(tmp_path, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}

    def boom(*args, **kwargs):
        raise AssertionError("must not draw again")

    monkeypatch.setattr(synth, "draw_fruit", boom)
    assert generate_synthetic_fruits(tmp_path, **SMALL) == root
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}


def test_killed_generation_leaves_no_tree(tmp_path, monkeypatch):
    calls = []
    real = synth.draw_fruit

    def dies_later(*args, **kwargs):
        calls.append(1)
        if len(calls) > 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "draw_fruit", dies_later)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_fruits(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the final folder nor a temp folder
    monkeypatch.setattr(synth, "draw_fruit", real)
    root = generate_synthetic_fruits(tmp_path, **SMALL)
    assert (root / synth.MARKER).is_file() and len(list(root.rglob("*.jpg"))) == 28


def test_default_size_generates_fast(tmp_path):
    t0 = time.perf_counter()
    root = generate_synthetic_fruits(tmp_path)  # 10 classes x (60 + 20) = 800 images
    elapsed = time.perf_counter() - t0
    assert len(list(root.rglob("*.jpg"))) == 800
    assert elapsed < 30, elapsed  # a few seconds normally; generous for loaded CI boxes


def test_datamodule_uses_fruits_path(tmp_path):
    dm = SyntheticDataModule(root=tmp_path, batch_size=8, **SMALL)
    assert dm.num_classes == 4
    dm.prepare_data()
    dm.setup()
    assert dm.layout == "fruits" and dm.num_classes == 4 and dm.input_size == 100
    assert dm.class_names == sorted(c.name for c in synth.synthetic_classes(4))
    assert dm.split_counts == {"train": 16, "val": 4, "test": 8}
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (8, 3, 100, 100)


def test_setup_without_prepare_generates(tmp_path):
    dm = SyntheticDataModule(root=tmp_path, norm=True, batch_size=4, **SMALL)
    dm.setup()
    assert dm.input_size == 224 and dm.preprocess["crop"] == 224


def test_many_classes_have_unique_names():
    classes = synth.synthetic_classes(60)
    assert len({c.name for c in classes}) == 60
    with pytest.raises(ValueError):
        synth.synthetic_classes(1)
