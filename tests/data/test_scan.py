"""fruitnet.data scanning: layouts, class mapping, junk and corrupt files, wrong roots."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from image_trees import encoded, fruits_tree, labels_by_class, make_tree, write_jpeg
from PIL import Image

from fruitnet.data import (
    ClassMismatchError,
    CorruptImageError,
    DataRootError,
    DataWarning,
    ImageFolderDataModule,
    scan_dataset,
)

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
    data = encoded(Image.effect_noise((120, 120), 50).convert("RGB"), "JPEG")
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
