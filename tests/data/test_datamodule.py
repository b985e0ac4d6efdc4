"""fruitnet.data: layouts, class mapping, corrupt files, decoding, splits, datamodule batches."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import fruitnet.data.host as host_mod
import fruitnet.data.stats as stats_mod
from fruitnet.data import (
    BatchTransform,
    ClassMismatchError,
    CorruptImageError,
    DataRootError,
    DataWarning,
    ImageFolderDataModule,
    auto_num_workers,
    check_image,
    is_image_file,
    load_image,
    preprocess_spec,
    scan_dataset,
    stratified_split,
)
from fruitnet.data.loading import EpochSampler, ImageListDataset
from fruitnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

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


# --------------------------------------------------------------------------- io


def test_is_image_file():
    assert is_image_file("a.jpg") and is_image_file("b.JPEG") and is_image_file("c.png")
    for name in ("._a.jpg", ".DS_Store", "Thumbs.db", "README.md", "LICENSE", "x.txt", "y.gif"):
        assert not is_image_file(name), name


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


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
        p.write_bytes(_encoded(img, fmt))
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
    data = _encoded(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    for path, words in [(empty, "empty"), (text, "text"), (truncated, "truncated")]:
        with pytest.raises(CorruptImageError, match=words) as err:
            check_image(path)
        assert str(path) in str(err.value) and err.value.path == path


# --------------------------------------------------------------------------- scanning


def test_class_missing_from_test_maps_by_name(tmp_path):
    root = fruits_tree(tmp_path / "fruits", test={"Apple Red": 2, "Cherry 1": 3})
    with pytest.warns(DataWarning, match="Banana"):
        scan = scan_dataset(root, "fruits")
    assert scan.class_names == ["Apple Red", "Banana", "Cherry 1"]
    assert labels_by_class(scan.test, scan.class_names) == {
        ("Apple Red", "Apple Red"),
        ("Cherry 1", "Cherry 1"),
    }
    assert sorted({y for _, y in scan.test}) == [0, 2]


def test_extra_test_class_is_an_error(tmp_path):
    root = fruits_tree(tmp_path / "fruits", test={"Apple Red": 1, "Banana": 1, "Durian": 2})
    with pytest.raises(ClassMismatchError, match="Durian") as err:
        scan_dataset(root)
    assert str(root / "Test") in str(err.value) and isinstance(err.value, ValueError)


def test_case_mismatch_hint(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"NORMAL": 2, "PNEU": 2}, "test": {"normal": 1}})
    with pytest.raises(ClassMismatchError, match="names must match exactly"):
        scan_dataset(root)


def test_non_image_files_and_junk_ignored(tmp_path):
    root = fruits_tree(tmp_path / "fruits")
    (root / "LICENSE").write_text("MIT")
    (root / "readme.md").write_text("hi")
    for junk in ("Thumbs.db", ".DS_Store", "notes.txt", "._0_100.jpg"):
        (root / "Training" / "Banana" / junk).write_bytes(b"junk")
    write_jpeg(root / "Training" / ".hidden" / "x.jpg")
    (root / "__MACOSX" / "Training" / "Banana").mkdir(parents=True)
    (root / "__MACOSX" / "Training" / "Banana" / "._0_100.jpg").write_bytes(b"\x00\x05")
    (root / "Training" / "__MACOSX").mkdir()
    (root / "Training" / "__MACOSX" / "._1.jpg").write_bytes(b"\x00")
    scan = scan_dataset(root)
    assert scan.class_names == ["Apple Red", "Banana", "Cherry 1"]
    assert len(scan.train) == 18 and len(scan.test) == 6
    assert all(p.suffix == ".jpg" and not p.name.startswith(".") for p, _ in scan.train)


def _add_bad_files(root: Path) -> list[Path]:
    bad = []
    empty = root / "Training" / "Banana" / "zero.jpg"
    empty.write_bytes(b"")
    text = root / "Training" / "Apple Red" / "text.jpg"
    text.write_text("this is not a jpeg")
    data = _encoded(Image.effect_noise((120, 120), 50).convert("RGB"), "JPEG")
    truncated = root / "Test" / "Cherry 1" / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    bad += [empty, text, truncated]
    return bad


def test_corrupt_files_error_names_them(tmp_path):
    root = fruits_tree(tmp_path / "fruits")
    bad = _add_bad_files(root)
    with pytest.raises(CorruptImageError) as err:
        scan_dataset(root)
    msg = str(err.value)
    for p in bad:
        assert str(p) in msg
    assert "skip_corrupt" in msg and len(err.value.others) == 2


def test_corrupt_files_skipped_with_one_warning(tmp_path):
    root = fruits_tree(tmp_path / "fruits")
    bad = _add_bad_files(root)
    with pytest.warns(DataWarning) as record:
        scan = scan_dataset(root, skip_corrupt=True)
    corrupt = [w for w in record if "corrupt" in str(w.message)]
    assert len(corrupt) == 1
    msg = str(corrupt[0].message)
    assert "skipped 3 corrupt" in msg and all(str(p) in msg for p in bad)
    assert {p for p, _ in scan.skipped} == set(bad)
    kept = {p for p, _ in scan.train} | {p for p, _ in scan.test}
    assert not kept & set(bad) and len(scan.train) == 18 and len(scan.test) == 6


def test_empty_class_folder_dropped_without_gap(tmp_path):
    root = fruits_tree(tmp_path / "fruits", train={"A": 3, "B": 3, "C": 3})
    (root / "Training" / "AA empty").mkdir()
    (root / "Training" / "AA empty" / "readme.txt").write_text("nothing here")
    with pytest.warns(DataWarning, match="AA empty"):
        scan = scan_dataset(root)
    assert scan.class_names == ["A", "B", "C"]
    assert sorted({y for _, y in scan.train}) == [0, 1, 2]


def test_chest_nested_folder_and_macosx(tmp_path):
    outer = tmp_path / "chest_xray"
    spec = {s: {"NORMAL": 2, "PNEUMONIA": 3} for s in ("train", "val", "test")}
    make_tree(outer / "chest_xray", spec)
    write_jpeg(outer / "__MACOSX" / "chest_xray" / "train" / "NORMAL" / "._a.jpeg")
    (outer / ".DS_Store").write_bytes(b"\0")
    scan = scan_dataset(outer, "split")
    assert scan.root == outer / "chest_xray" and scan.layout == "split"
    assert scan.class_names == ["NORMAL", "PNEUMONIA"]
    assert len(scan.train) == len(scan.val) == len(scan.test) == 5


def test_chest_root_with_duplicate_inside(tmp_path):
    root = tmp_path / "chest_xray"
    spec = {s: {"NORMAL": 2, "PNEUMONIA": 2} for s in ("train", "val", "test")}
    make_tree(root, spec)
    make_tree(root / "chest_xray", spec)  # the archive's nested duplicate copy
    make_tree(root / "__MACOSX", spec)
    scan = scan_dataset(root)
    assert scan.root == root and scan.layout == "split" and len(scan.train) == 4


@pytest.mark.parametrize(
    ("dirs", "layout"),
    [
        (("Training", "Test"), "fruits"),
        (("TRAIN", "Val", "tEsT"), "split"),
        (("train", "test"), "split"),
        (("",), "single"),
    ],
)
def test_auto_layout_detection(tmp_path, caplog, dirs, layout):
    classes = {"cat": 10, "dog": 10}
    root = make_tree(tmp_path / "data", dict.fromkeys(dirs, classes))
    with caplog.at_level(logging.INFO, logger="fruitnet.data"):
        dm = ImageFolderDataModule(root=root, image_size=16, batch_size=4, cache_dir=tmp_path / "c")
        dm.setup()
    assert dm.layout == layout
    assert f"detected layout '{layout}'" in caplog.text
    assert dm.class_names == ["cat", "dog"]
    if layout == "single":  # split (0.8, 0.1, 0.1), stratified
        assert dm.split_counts == {"train": 16, "val": 2, "test": 2}
        assert dm.class_counts["val"] == [1, 1] and dm.class_counts["test"] == [1, 1]


def test_explicit_layout_matches(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    assert scan_dataset(root, "split").layout == "split"


# --------------------------------------------------------------------------- wrong roots


def test_missing_root_error(tmp_path):
    missing = tmp_path / "nowhere" / "fruits-360"
    dm = ImageFolderDataModule(root=missing, layout="fruits")
    with pytest.raises(DataRootError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert "Training/<class name>" in msg and "Test/<class name>" in msg
    assert "python -m fruitnet.data.download fruits" in msg
    assert isinstance(err.value, ValueError)


def test_empty_root_error(tmp_path):
    root = tmp_path / "chest_xray"
    root.mkdir()
    with pytest.raises(DataRootError, match="is empty") as err:
        scan_dataset(root, "split")
    msg = str(err.value)
    assert "train/<class name>" in msg and "python -m fruitnet.data.download chest_xray" in msg


def test_chest_folder_given_to_fruits_layout(tmp_path):
    root = make_tree(tmp_path / "mydata", {s: {"NORMAL": 2, "PNEU": 2} for s in ("train", "test")})
    with pytest.raises(DataRootError) as err:
        scan_dataset(root, "fruits")
    msg = str(err.value)
    assert str(root) in msg and "Training/" in msg
    assert "python -m fruitnet.data.download fruits" in msg
    assert "data.layout=split" in msg


def test_generic_folder_error_lists_layouts(tmp_path):
    root = tmp_path / "pictures"
    write_jpeg(root / "only_class" / "a.jpg")
    (root / "notes.txt").write_text("x")
    with pytest.raises(DataRootError) as err:
        scan_dataset(root)
    msg = str(err.value)
    assert str(root) in msg
    for tree_line in ("fruits:", "split:", "single:", "Training/", "train/", "<class name>/*.jpg"):
        assert tree_line in msg
    assert "download" not in msg


def test_single_layout_refuses_split_folders(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"a": 2}, "val": {"a": 2}})
    with pytest.raises(DataRootError, match="train/test splits"):
        scan_dataset(root, "single")


# --------------------------------------------------------------------------- splits


def test_stratified_split_proportions():
    sizes = {0: 100, 1: 40, 2: 10, 3: 3, 4: 2, 5: 1}
    labels = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    with pytest.warns(DataWarning, match="single image"):
        train, val = stratified_split(labels, (0.9, 0.1), seed=7)
        again = stratified_split(labels, (0.9, 0.1), seed=7)
        other = stratified_split(labels, (0.9, 0.1), seed=8)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    val_counts = np.bincount(labels[val], minlength=6)
    assert val_counts.tolist() == [10, 4, 1, 1, 1, 0]  # >=1 for every class with >=2 images
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)


def test_stratified_split_three_way():
    labels = np.repeat(np.arange(3), [50, 20, 2])
    train, val, test = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    assert np.bincount(labels[val]).tolist() == [5, 2, 1]
    assert np.bincount(labels[test], minlength=3).tolist() == [5, 2, 0]
    assert np.bincount(labels[train]).tolist() == [40, 16, 1]


def test_val_carved_from_train_is_stratified(tmp_path):
    root = fruits_tree(tmp_path / "f", train={"A": 20, "B": 10, "C": 2})
    dm = ImageFolderDataModule(root=root, image_size=16, val_fraction=0.1, cache_dir=tmp_path)
    dm.setup()
    assert dm.class_counts["val"] == [2, 1, 1] and dm.class_counts["train"] == [18, 9, 1]
    assert dm.num_train == 28 and dm.num_val == 4 and dm.num_test == 6


def test_given_val_folder(tmp_path):
    spec = {"train": {"N": 10, "P": 10}, "val": {"N": 1, "P": 2}, "test": {"N": 2, "P": 2}}
    root = make_tree(tmp_path / "chest_xray", spec)
    dm = ImageFolderDataModule(root=root, layout="split", image_size=16, use_given_val=True)
    dm.setup()
    assert dm.split_counts == {"train": 20, "val": 3, "test": 4}
    dm = ImageFolderDataModule(root=root, layout="split", image_size=16)
    dm.setup()
    assert dm.split_counts == {"train": 18, "val": 2, "test": 4}


def test_max_samples_per_class(tmp_path):
    root = fruits_tree(tmp_path / "f", train={"A": 10, "B": 7})
    scan = scan_dataset(root, max_per_class=4)
    assert len(scan.train) == 8 and len(scan.test) == 4
    assert scan_dataset(root, max_per_class=4).train == scan.train


# --------------------------------------------------------------------------- datamodule


def test_batches_norm_false(tmp_path):
    root = fruits_tree(tmp_path / "f", size=(40, 30))
    dm = ImageFolderDataModule(root=root, image_size=32, batch_size=4, val_fraction=0.2)
    dm.setup()
    assert dm.input_size == 32 and dm.task == "multiclass" and dm.num_classes == 3
    assert dm.preprocess == preprocess_spec(False, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (4, 3, 32, 32) and y.dtype == torch.int64
    xf, yf = dm.on_after_batch_transfer((x, y), 0)
    assert xf.dtype == torch.float32 and torch.allclose(xf, x.float() / 255)
    assert torch.equal(yf, y)


def test_batches_norm_true(tmp_path):
    root = fruits_tree(tmp_path / "f", size=(50, 40))
    dm = ImageFolderDataModule(root=root, norm=True, batch_size=3)
    dm.setup()
    assert dm.input_size == 224
    assert dm.preprocess["mean"] == list(IMAGENET_MEAN) and dm.preprocess["crop"] == 224
    x, y = next(iter(dm.test_dataloader()))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 3, 224, 224)
    xf, _ = dm.on_after_batch_transfer([x, y], 0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(xf, (x.float() / 255 - mean) / std, atol=1e-5)


def test_test_loader_is_ordered_and_train_shuffles(tmp_path):
    root = fruits_tree(tmp_path / "f", train={"A": 20, "B": 20}, test={"A": 5, "B": 5})
    dm = ImageFolderDataModule(root=root, image_size=8, batch_size=4, val_fraction=0.1)
    dm.setup()
    test_labels = torch.cat([y for _, y in dm.test_dataloader()]).tolist()
    assert test_labels == sorted(test_labels)
    train = dm.train_dataloader()
    assert train.drop_last and len(train) == 36 // 4
    first = torch.cat([y for _, y in train]).tolist()
    assert first != sorted(first)


def test_augmentation_only_when_training(tmp_path):
    root = fruits_tree(tmp_path / "f", size=(40, 40))
    dm = ImageFolderDataModule(root=root, image_size=32, batch_size=6, augment="basic")
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    plain = x.float() / 255
    dm.trainer = SimpleNamespace(training=False)
    assert torch.allclose(dm.on_after_batch_transfer((x, y), 0)[0], plain)
    dm.trainer = SimpleNamespace(training=True)
    out = dm.on_after_batch_transfer((x, y), 0)[0]
    assert out.shape == plain.shape and not torch.allclose(out, plain)
    assert out.min() >= 0 and out.max() <= 1


def test_flip_is_per_sample():
    torch.manual_seed(0)
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    img[..., :4] = 255  # left half white: a flip is visible
    batch = img.repeat(64, 1, 1, 1)
    t = BatchTransform(augment="basic", max_rotate=0, max_translate=0, scale=(1, 1), jitter=0)
    out = t(batch, train=True)
    left_white = out[:, 0, 0, 0] > 0.5
    assert 0 < int(left_white.sum()) < 64


def test_channels_last_and_bad_input():
    t = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, channels_last=True)
    out = t(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError):
        t(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError):
        BatchTransform(augment="heavy")


def test_dataset_stats_cached_and_reused(tmp_path, monkeypatch):
    root = fruits_tree(tmp_path / "f", size=(20, 20))
    calls = []
    real = stats_mod.compute_dataset_stats

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stats_mod, "compute_dataset_stats", counting)
    kw = dict(root=root, image_size=16, stats="dataset", cache_dir=tmp_path / "cache", batch_size=4)
    first = ImageFolderDataModule(**kw)
    first.setup()
    first.setup()  # idempotent
    files = list((tmp_path / "cache").glob("stats-*.json"))
    assert len(calls) == 1 and len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = ImageFolderDataModule(**kw)
    second.setup()
    assert len(calls) == 1 and files[0].stat().st_mtime_ns == mtime
    assert second.preprocess["mean"] == first.preprocess["mean"]
    saved = json.loads(files[0].read_text())
    assert saved["mean"] == first.preprocess["mean"]
    # Solid-colour images: the mean is the training pixels' mean, std > 0 across classes.
    x = torch.stack([first.train_set[i][0] for i in range(len(first.train_set))]).double() / 255
    assert np.allclose(first.preprocess["mean"], x.mean((0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(first.preprocess["std"], x.std((0, 2, 3), correction=0).tolist(), atol=1e-6)
    xf, _ = first.on_after_batch_transfer(next(iter(first.train_dataloader())), 0)
    assert abs(xf.mean().item()) < 1.0


def test_class_weights_auto_and_balanced_sampler(tmp_path):
    root = fruits_tree(tmp_path / "f", train={"A": 40, "B": 10, "C": 5}, size=(8, 8))
    dm = ImageFolderDataModule(
        root=root,
        image_size=8,
        batch_size=8,
        val_fraction=0.0,
        class_weights="auto",
        sampler="balanced",
    )
    dm.setup()
    w = np.array(dm.class_weights)
    assert np.isclose(w.mean(), 1.0) and w[0] < w[1] < w[2]
    assert np.allclose(w * np.array([40, 10, 5]), w[0] * 40)
    loader = dm.train_dataloader()
    drawn = torch.cat([y for _ in range(20) for _, y in loader])
    share = torch.bincount(drawn, minlength=3).float() / len(drawn)
    assert torch.all((share - 1 / 3).abs() < 0.08), share
    assert dm.val_dataloader() == []


def test_batch_size_larger_than_dataset(tmp_path):
    root = fruits_tree(tmp_path / "f")
    dm = ImageFolderDataModule(root=root, image_size=8, batch_size=1000)
    dm.setup()
    with pytest.warns(DataWarning, match="larger than the test split"):
        test = dm.test_dataloader()
    assert test.batch_size == 6 and len(test) == 1
    with pytest.warns(DataWarning, match="larger than the train split"):
        train = dm.train_dataloader()
    assert not train.drop_last and len(train) == 1


def test_image_size_auto(tmp_path, caplog):
    root = fruits_tree(tmp_path / "f", size=(70, 45))
    with caplog.at_level(logging.INFO, logger="fruitnet.data"):
        dm = ImageFolderDataModule(root=root)
        dm.setup()
    assert dm.input_size == 48 and "image_size=auto" in caplog.text  # median 45 -> 48


def test_num_workers_auto():
    assert auto_num_workers(1) == 0 and auto_num_workers(2) == 0
    assert auto_num_workers(4) == 3 and auto_num_workers(16) == 4
    dm = ImageFolderDataModule(root="x", num_workers=0, pin_memory="auto")
    assert dm.persistent_workers is False and dm.pin_memory == torch.cuda.is_available()


def test_loader_with_a_worker_process(tmp_path):
    root = fruits_tree(tmp_path / "f", size=(20, 20))
    dm = ImageFolderDataModule(root=root, image_size=16, batch_size=4, num_workers=1)
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1
    batches = list(loader)
    assert len(batches) == 3 and all(x.dtype == torch.uint8 for x, _ in batches)


def test_decoded_cache_matches_direct_decoding(tmp_path):
    pytest.importorskip("fruitnet.data.cache")
    root = fruits_tree(tmp_path / "f", size=(30, 20))
    kw = dict(root=root, image_size=16, val_fraction=0.2)
    plain = ImageFolderDataModule(**kw)
    plain.setup()
    cached = ImageFolderDataModule(**kw, cache=True, cache_dir=tmp_path / "cache")
    cached.setup()
    assert cached.train_set.cache is not None and list((tmp_path / "cache").glob("*.npy"))
    for i in range(len(plain.train_set)):
        assert torch.equal(plain.train_set[i][0], cached.train_set[i][0])
        assert plain.train_set[i][1] == cached.train_set[i][1]


def test_cache_auto_on_when_it_fits_off_when_not(tmp_path, monkeypatch, caplog):
    """data.cache=auto: on for a set that fits in half the free disk and RAM (the same pixels as
    decoding), off when it does not, and a cache dir that cannot be written falls back to decoding."""
    root = fruits_tree(tmp_path / "f", size=(30, 20))
    kw = dict(root=root, image_size=16, val_fraction=0.2)
    plain = ImageFolderDataModule(**kw)
    plain.setup()
    with caplog.at_level(logging.INFO, logger="fruitnet.data.datamodule"):
        auto = ImageFolderDataModule(**kw, cache="auto", cache_dir=tmp_path / "cache")
        auto.setup()
    assert auto.cache and auto.train_set.cache is not None
    assert "data.cache=auto" in caplog.text and "-> cache on" in caplog.text
    assert torch.equal(plain.train_set.take(range(len(plain.train_set)))[0],
                       auto.train_set.take(range(len(auto.train_set)))[0])  # fmt: skip

    monkeypatch.setattr(host_mod, "available_ram", lambda: 1000)  # 1 kB of RAM: does not fit
    small = ImageFolderDataModule(**kw, cache="auto", cache_dir=tmp_path / "cache2")
    small.setup()
    assert not small.cache and small.train_set.cache is None
    assert not (tmp_path / "cache2").exists()
    monkeypatch.undo()

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    fallback = ImageFolderDataModule(**kw, cache="auto", cache_dir=blocked / "cache")
    with caplog.at_level(logging.WARNING, logger="fruitnet.data.datamodule"):
        fallback.setup()
    assert not fallback.cache and fallback.train_set.cache is None
    assert "cannot build the decoded-image cache" in caplog.text
    with pytest.raises(OSError):
        ImageFolderDataModule(**kw, cache=True, cache_dir=blocked / "cache").setup()
    with pytest.raises(ValueError, match="cache must be"):
        ImageFolderDataModule(**kw, cache="yes")


def noise_tree(root: Path, classes=3, n=7, size=(20, 20)) -> Path:
    """Fruits layout whose images all differ (random pixels, PNG: decoding is exact)."""
    rng = np.random.default_rng(0)
    for split, count in (("Training", n), ("Test", 3)):
        for k in range(classes):
            for i in range(count):
                path = root / split / f"class {k}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path)
    return root


@pytest.mark.parametrize("mode", ["decode", "cache", "on_device", "cache+on_device"])
def test_batched_loaders_equal_item_by_item_collate(tmp_path, mode):
    """Every loader fetches whole batches (one indexing op when cached or on the device); the
    batches must be the ones that collating the items one by one in the same order gives."""
    from torch.utils.data import DataLoader

    root = noise_tree(tmp_path / "f")
    kw = dict(root=root, image_size=16, batch_size=4, val_fraction=0.3, seed=3)
    dm = ImageFolderDataModule(
        **kw, cache="cache" in mode, on_device="on_device" in mode, cache_dir=tmp_path / "c"
    )
    dm.setup()
    ref = ImageFolderDataModule(**kw)
    ref.setup()
    for split in ("train", "val", "test"):
        loader = getattr(dm, f"{split}_dataloader")()
        items = getattr(ref, f"{split}_set")
        order = list(EpochSampler(len(items), 3)) if split == "train" else None
        expected = DataLoader(
            items, batch_size=loader.batch_size, sampler=order, drop_last=loader.drop_last
        )
        got = list(loader)
        want = list(expected)
        assert len(got) == len(want) > 0, split
        for (x, y), (ex, ey) in zip(got, want, strict=True):
            assert x.dtype == torch.uint8 and y.dtype == torch.int64
            assert torch.equal(x, ex) and torch.equal(y, ey), split
    on_device = "on_device" in mode
    assert (dm.train_set.images is not None) == on_device
    if on_device:
        assert loader.num_workers == 0 and not loader.pin_memory


def test_on_device_refuses_a_split_larger_than_half_the_free_gpu_memory(tmp_path, monkeypatch):
    root = noise_tree(tmp_path / "f")
    dm = ImageFolderDataModule(root=root, image_size=16, batch_size=4, on_device=True)
    dm.setup()
    dm.trainer = SimpleNamespace(training=True, strategy=SimpleNamespace(root_device="cuda:0"))
    need = 3 * 16 * 16 * len(dm.train_set)
    dm.train_set.preload("cpu")  # decoded in RAM: its size is known, nothing has moved yet
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * need - 2, 80 * 2**30))
    with pytest.raises(ValueError, match=r"on_device=true: the train split \(\d+ images"):
        dm.train_dataloader()
    assert dm.train_set.images.device.type == "cpu"


def test_dataset_from_tensors_and_preload_roundtrip():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    ds = ImageListDataset.from_tensors(images, [0, 1, 2, 0, 1, 2])
    x, y = ds.take([5, 0, 5])
    assert torch.equal(x, images[[5, 0, 5]]) and y.tolist() == [2, 0, 2]
    assert ds[1][1] == 1 and torch.equal(ds[1][0], images[1]) and ds.nbytes == images.numel()
    with pytest.raises(ValueError, match="uint8"):
        ImageListDataset.from_tensors(images.float(), [0] * 6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="sampler"):
        ImageFolderDataModule(root="x", sampler="weighted")
    with pytest.raises(ValueError, match="stats"):
        ImageFolderDataModule(root="x", stats="cifar")
    with pytest.raises(ValueError, match="val_fraction"):
        ImageFolderDataModule(root="x", val_fraction=1.0)
    with pytest.raises(ValueError, match="layout"):
        scan_dataset(".", "flat")


# --------------------------------------------------------------------------- real samples


def test_fruits_360_sample(shared_data, tmp_path):
    root = shared_data / "fruits-360-sample"
    if not root.is_dir():
        pytest.skip("fruits-360-sample not present")
    dm = ImageFolderDataModule(root=root, layout="fruits", image_size=100, batch_size=32)
    dm.setup()
    assert dm.num_classes == 95 and dm.layout == "fruits" and dm.task == "multiclass"
    assert dm.num_train + dm.num_val == 1140 and dm.num_test == 380
    assert dm.class_counts["val"] == [1] * 95 and set(dm.class_counts["test"]) == {4}
    assert "Apple Braeburn" in dm.class_names
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (32, 3, 100, 100) and x.dtype == torch.uint8
    name = dm.test_set.paths[0].parent.name
    assert dm.class_names[dm.test_set.labels[0]] == name


def test_chest_xray_sample(shared_data):
    root = shared_data / "chest_xray-sample"
    if not root.is_dir():
        pytest.skip("chest_xray-sample not present")
    dm = ImageFolderDataModule(root=root, layout="split", norm=True, batch_size=8)
    dm.setup()
    assert dm.class_names == ["NORMAL", "PNEUMONIA"] and dm.task == "binary"
    assert dm.num_classes == 2 and dm.split_counts == {"train": 64, "val": 8, "test": 48}
    x, y = next(iter(dm.val_dataloader()))
    assert tuple(x.shape) == (8, 3, 224, 224) and x.dtype == torch.uint8
    xf, _ = dm.on_after_batch_transfer((x, y), 0)
    assert xf.dtype == torch.float32 and xf.shape == (8, 3, 224, 224)
