"""Scanning never gives one image two labels or two splits: links, hard links, case-variant
folder names and nested copies of the dataset each get a count, an error or a stated rule."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from fruitnet.data import ImageFolderDataModule
from fruitnet.data.scan import (
    ClassMismatchError,
    DataConflictError,
    DataWarning,
    scan_dataset,
)

CLASSES = ("Apple", "Banana", "Cherry")
TRAIN_N, TEST_N = 4, 2


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 100, 200 - shade)).save(path)


def make_fruits(root: Path, classes=CLASSES, train=TRAIN_N, test=TEST_N) -> Path:
    for split, n in (("Training", train), ("Test", test)):
        for c, name in enumerate(classes):
            for i in range(n):
                _jpeg(root / split / name / f"{i}.jpg", 20 * c + i)
    return root


def counts(scan) -> dict[str, list[int]]:
    def per_class(samples):
        return [sum(1 for _, y in samples if y == k) for k in range(len(scan.class_names))]

    return {"train": per_class(scan.train), "test": per_class(scan.test)}


REAL = {"train": [TRAIN_N] * 3, "test": [TEST_N] * 3}


# --------------------------------------------------------------------------- loops


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("Training/Apple/more", ".."),  # the split folder: all classes again, under Apple
        ("Training/Apple/self", "."),  # the class folder itself
        ("Training/Apple/sub/up", "../.."),  # two levels up, from a real subfolder
        ("Training/Apple/root", "../../.."),  # above the data root
    ],
)
def test_a_link_cycle_inside_a_class_folder_scans_to_the_real_image_count(link, target, tmp_path):
    root = make_fruits(tmp_path / "fruits")
    (root / "Training/Apple/sub").mkdir(exist_ok=True)
    os.symlink(target, root / link)
    with pytest.warns(DataWarning, match=r"skipped 1 folder link\(s\) that lead back") as rec:
        scan = scan_dataset(root, "fruits")
    assert str(root / link) in str(rec[0].message)
    assert scan.class_names == list(CLASSES)
    assert counts(scan) == REAL
    assert scan.duplicates == 0
    assert all(p.parts[-2] == CLASSES[y] for p, y in scan.train), "an image changed class"


def test_loop_between_two_subfolders_and_a_doubly_linked_folder(tmp_path):
    root = make_fruits(tmp_path / "fruits")
    apple = root / "Training/Apple"
    _jpeg(apple / "a/x.jpg", 1)
    _jpeg(apple / "b/y.jpg", 2)
    os.symlink("../b", apple / "a/to_b")  # a -> b
    os.symlink("../a", apple / "b/to_a")  # b -> a: a loop through two folders
    os.symlink("a", apple / "z_again")  # the same real folder a second time
    with pytest.warns(DataWarning, match="lead back"):
        scan = scan_dataset(root, "fruits")
    assert counts(scan)["train"] == [TRAIN_N + 2, TRAIN_N, TRAIN_N]
    # a/to_b reaches b (1 image) before b itself is walked; z_again reaches a (x.jpg + b's y.jpg)
    assert scan.duplicates == 3


def test_a_linked_in_class_folder_is_followed(tmp_path):
    """Datasets are often linked in from another disk: a class folder that is a link is read."""
    root = make_fruits(tmp_path / "fruits")
    elsewhere = tmp_path / "other_disk"
    for split, n in (("Training", TRAIN_N), ("Test", TEST_N)):
        for i in range(n):
            _jpeg(elsewhere / split / f"{i}.jpg", 90 + i)
        os.symlink(elsewhere / split, root / split / "Durian")
    scan = scan_dataset(root, "fruits")
    assert scan.class_names == [*CLASSES, "Durian"]
    assert counts(scan) == {"train": [TRAIN_N] * 4, "test": [TEST_N] * 4}
    assert scan.duplicates == 0


# --------------------------------------------------------------------------- two labels


def test_a_file_linked_into_two_classes_is_refused_naming_both_paths(tmp_path):
    root = make_fruits(tmp_path / "fruits")
    os.symlink("../Apple/0.jpg", root / "Training/Banana/extra.jpg")
    with pytest.raises(DataConflictError, match="in two classes") as err:
        scan_dataset(root, "fruits")
    msg = str(err.value)
    assert str(root / "Training/Apple/0.jpg") in msg
    assert str(root / "Training/Banana/extra.jpg") in msg
    assert "'Apple'" in msg and "'Banana'" in msg


def test_a_sibling_class_linked_inside_a_class_is_refused(tmp_path):
    """The silent relabelling of the issue: Apple/more -> ../Banana put Banana under Apple."""
    root = make_fruits(tmp_path / "fruits")
    os.symlink("../Banana", root / "Training/Apple/more")
    with pytest.raises(DataConflictError, match=r"4 image file\(s\) are reached in two classes"):
        scan_dataset(root, "fruits")


def test_a_hard_link_into_two_classes_is_refused(tmp_path):
    root = make_fruits(tmp_path / "fruits")
    os.link(root / "Training/Apple/1.jpg", root / "Training/Cherry/copy.jpg")
    with pytest.raises(DataConflictError, match="in two classes") as err:
        scan_dataset(root, "fruits")
    assert str(root / "Training/Cherry/copy.jpg") in str(err.value)


# --------------------------------------------------------------------------- two splits


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_file_linked_into_train_and_test_is_refused(kind, tmp_path):
    root = make_fruits(tmp_path / "fruits")
    src, dst = root / "Training/Apple/0.jpg", root / "Test/Apple/leak.jpg"
    if kind == "symlink":
        os.symlink(src, dst)
    else:
        os.link(src, dst)
    with pytest.raises(DataConflictError, match="in two splits") as err:
        scan_dataset(root, "fruits")
    msg = str(err.value)
    assert str(src) in msg and str(dst) in msg and "leakage" in msg


def test_a_split_folder_linked_to_another_split_is_refused(tmp_path):
    root = tmp_path / "xray"
    for split in ("train", "val"):
        for c, name in enumerate(("NORMAL", "PNEUMONIA")):
            for i in range(3):
                _jpeg(root / split / name / f"{i}.jpg", 50 * c + i)
    os.symlink("train", root / "test")
    with pytest.raises(DataConflictError, match=r"the test folder .*test is the train folder"):
        scan_dataset(root, "split")


def test_single_layout_counts_a_twice_linked_file_once_so_it_cannot_land_in_two_splits(tmp_path):
    root = tmp_path / "flowers"
    for c, name in enumerate(("daisy", "rose")):
        for i in range(10):
            _jpeg(root / name / f"{i}.jpg", 40 * c + i)
    os.symlink("0.jpg", root / "daisy/zz_same_as_0.jpg")
    scan = scan_dataset(root, "single")
    assert len(scan.train) == 20 and scan.duplicates == 1
    assert root / "daisy/zz_same_as_0.jpg" not in {p for p, _ in scan.train}


# --------------------------------------------------------------------------- duplicates in a class


def test_a_file_reached_twice_in_one_class_counts_once_and_the_scan_line_says_so(tmp_path, caplog):
    root = make_fruits(tmp_path / "fruits")
    os.symlink("0.jpg", root / "Training/Apple/again.jpg")
    os.link(root / "Training/Apple/1.jpg", root / "Training/Apple/hard.jpg")
    os.symlink("..", root / "Training/Banana/loop")
    caplog.set_level(logging.INFO, logger="fruitnet.data")
    dm = ImageFolderDataModule(root=root, layout="fruits", num_workers=0, val_fraction=0.0)
    with pytest.warns(DataWarning, match="lead back"):
        dm.setup("fit")
    assert dm.class_counts["train"] == [TRAIN_N] * 3
    assert dm.duplicates == 2
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("data: "))
    assert f"train/val/test = {3 * TRAIN_N}/0/{3 * TEST_N} images (2 duplicate files skipped)" in (
        line
    )


def test_the_scan_line_has_no_duplicate_note_when_there_are_none(tmp_path, caplog):
    root = make_fruits(tmp_path / "fruits")
    caplog.set_level(logging.INFO, logger="fruitnet.data")
    ImageFolderDataModule(root=root, layout="fruits", num_workers=0).setup("fit")
    assert "duplicate" not in caplog.text


# --------------------------------------------------------------------------- names and copies


def _case_sensitive(tmp_path: Path) -> bool:
    probe = tmp_path / "CaseProbe"
    probe.mkdir()
    sensitive = not (tmp_path / "caseprobe").exists()
    probe.rmdir()
    return sensitive


def test_class_folders_differing_only_in_case_are_refused(tmp_path):
    if not _case_sensitive(tmp_path):
        pytest.skip("case-insensitive file system: Apple/ and apple/ are one folder")
    root = make_fruits(tmp_path / "fruits")
    for i in range(2):
        _jpeg(root / "Training/apple" / f"{i}.jpg", 200 + i)
    with pytest.raises(DataConflictError, match="differ only in case") as err:
        scan_dataset(root, "fruits")
    assert str(root / "Training/Apple") in str(err.value)
    assert str(root / "Training/apple") in str(err.value)


def test_split_folders_differing_only_in_case_are_refused(tmp_path):
    if not _case_sensitive(tmp_path):
        pytest.skip("case-insensitive file system")
    root = tmp_path / "xray"
    for split in ("train", "Train", "test"):
        for c, name in enumerate(("NORMAL", "PNEUMONIA")):
            _jpeg(root / split / name / "0.jpg", 60 * c)
    with pytest.raises(DataConflictError, match="2 folders for the train split: Train/, train/"):
        scan_dataset(root, "split")


def test_a_class_named_in_another_case_in_test_is_a_mismatch_not_a_new_label(tmp_path):
    root = make_fruits(tmp_path / "fruits")
    (root / "Test/Cherry").rename(root / "Test/cherry")
    with pytest.raises(ClassMismatchError, match="training has 'Cherry': names must match"):
        scan_dataset(root, "fruits")


@pytest.mark.parametrize(
    "nested",
    [
        "Training/fruits-360/Training/Apple",  # a whole copy dropped into the split folder
        "Training/Apple/fruits-360/Test/Apple",  # ... or into a class folder
        "Training/Apple/Banana",  # a class folder inside another class
    ],
)
def test_a_copy_of_the_dataset_nested_in_a_class_folder_is_refused(nested, tmp_path):
    root = make_fruits(tmp_path / "fruits")
    for i in range(2):
        _jpeg(root / nested / f"copy{i}.jpg", 222)
    with pytest.raises(DataConflictError, match="lies inside the class folder") as err:
        scan_dataset(root, "fruits")
    assert "Move it out" in str(err.value)


def test_a_nested_copy_beside_the_splits_is_ignored_and_said(tmp_path, caplog):
    """Kaggle's fruits-360/fruits-360 (and chest_xray/chest_xray): only the root's splits count."""
    root = make_fruits(tmp_path / "fruits-360")
    make_fruits(root / "fruits-360", train=7, test=5)
    caplog.set_level(logging.INFO, logger="fruitnet.data")
    scan = scan_dataset(root, "auto")
    assert counts(scan) == REAL
    assert "ignoring fruits-360/, another copy of the dataset" in caplog.text


def test_a_subfolder_named_like_its_own_class_is_fine(tmp_path):
    """Archives often wrap a class in a folder of the same name (Apple/Apple/*.jpg)."""
    root = make_fruits(tmp_path / "fruits")
    for i in range(2):
        _jpeg(root / "Training/Apple/Apple" / f"w{i}.jpg", 7 + i)
    scan = scan_dataset(root, "fruits")
    assert counts(scan)["train"] == [TRAIN_N + 2, TRAIN_N, TRAIN_N]
