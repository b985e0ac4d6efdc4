"""data=folder: the generic image-folder dataset, one epoch of the basic CNN on every layout."""

from __future__ import annotations

import logging

import pytest
from helpers import read_results, train
from PIL import Image, ImageDraw

# Three shapes a CNN tells apart quickly, on mixed sizes and modes like users' folders.
SHAPES = {"Circle": "ellipse", "Square": "rectangle", "Triangle": "polygon"}


def draw(path, shape: str, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    side = 40 + 8 * (i % 3)
    img = Image.new("RGB", (side, side + 4 * (i % 2)), "white")
    pen = ImageDraw.Draw(img)
    box = (6 + i % 5, 6, side - 6, side - 6)
    if shape == "polygon":
        pen.polygon([(side // 2, 4), (4, side - 4), (side - 4, side - 4)], fill=(200, 40, 40))
    else:
        getattr(pen, shape)(box, fill=(40, 40, 200))
    (img.convert("L") if i % 4 == 0 else img).save(path)


def make_layout(root, splits: dict[str, int]) -> None:
    for split, n in splits.items():
        for name, shape in SHAPES.items():
            for i in range(n):
                draw(root / split / name / f"{i}.jpg", shape, i)


LAYOUTS = {
    "fruits": {"Training": 12, "Test": 4},
    "split": {"Train": 12, "VAL": 3, "test": 4},  # mixed case on purpose
    "split-no-val": {"train": 12, "test": 4},
    "single": {"": 20},
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_one_epoch_of_the_basic_cnn_on_each_layout(name, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fruitnet.data")
    root = tmp_path / "images"
    make_layout(root, LAYOUTS[name])
    results = train(
        ["model=cnn", "data=folder", f"data.root={root}", "data.batch_size=8",
         "trainer.max_epochs=1"],
        tmp_path / "run",
    )  # fmt: skip
    layout = "split" if name.startswith("split") else name
    assert results["layout"] == layout
    assert f"detected layout '{layout}'" in caplog.text
    assert results["class_names"] == sorted(SHAPES)
    # image_size=null: the median size of the training images, rounded and printed
    assert results["input_size"] % 8 == 0 and 40 <= results["input_size"] <= 64
    on_disk = read_results(tmp_path / "run")
    assert on_disk["test_acc"] is not None and "test_f1_macro" in on_disk
    assert set(on_disk["per_class_acc"]) == set(SHAPES)


def test_binary_folder_gets_the_binary_metrics(tmp_path):
    root = tmp_path / "images"
    for split, n in {"train": 10, "test": 4}.items():
        for name, shape in list(SHAPES.items())[:2]:
            for i in range(n):
                draw(root / split / name / f"{i}.png", shape, i)
    results = train(
        ["model=cnn", "data=folder", f"data.root={root}", "data.batch_size=8",
         "trainer.max_epochs=1"],
        tmp_path / "run",
    )  # fmt: skip
    assert results["task"] == "binary"
    for key in ("test_precision", "test_recall", "test_specificity", "test_f1", "test_auroc"):
        assert 0.0 <= results[key] <= 1.0, key
    assert len(results["confusion_matrix"]) == 2


@pytest.mark.parametrize("sample", ["chest_xray-small", "fruits-360-sample"])
def test_folder_on_the_real_samples(sample, tmp_path, shared_data):
    results = train(
        ["model=cnn", "data=folder", f"data.root={shared_data / sample}", "trainer.max_epochs=1",
         "data.max_samples_per_class=12"],
        tmp_path,
    )  # fmt: skip
    assert results["num_classes"] == (2 if sample.startswith("chest") else 95)
    assert read_results(tmp_path)["test_acc"] is not None
