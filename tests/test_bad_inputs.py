"""Bad inputs and hostile events: one test (or one parametrized test) per row of the issue table.

Each test asserts the message a user sees (it must name the file, key or path at fault) or the
outcome (the run works, with a warning). Runs are in-process on tiny synthetic data unless the
row is about the command line itself.

This file: the data (roots, class folders, corrupt files, image modes, loader workers);
tests/test_bad_runs.py: configs, checkpoints and what goes wrong during a run. The rows "run
killed with SIGKILL mid-epoch" and "SIGTERM / Ctrl-C" are in tests/test_kill_resume.py; archive
members landing outside the download folder are refused in tests/test_download.py
(test_zip_traversal_refused, test_tar_traversal_refused, ...).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, jpeg_folders, train
from PIL import Image

from fruitnet.data import (
    ClassMismatchError,
    CorruptImageError,
    DataRootError,
    DataWarning,
    ImageFolderDataModule,
    check_image,
    image_spec,
    load_image,
    preprocess_spec,
)


def datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    args = {"layout": "fruits", "image_size": 32, "batch_size": 4, "num_workers": 0}
    return ImageFolderDataModule(root=root, **{**args, **kwargs})


def samples(dataset) -> list[tuple[str, int]]:
    """(class folder name, label) of every item of an ImageListDataset."""
    return [(p.parent.name, y) for p, y in zip(dataset.paths, dataset.labels, strict=True)]


# --------------------------------------------------------------------------- data.root


@pytest.mark.parametrize("case", ["missing", "empty", "chest_xray_layout"])
def test_bad_data_root_fails_before_training_naming_path_layout_and_download(case, tmp_path):
    root = tmp_path / ("chest_xray" if case == "chest_xray_layout" else "fruits-360")
    if case == "empty":
        root.mkdir()
    elif case == "chest_xray_layout":
        split = ["train/NORMAL", "train/PNEUMONIA", "test/NORMAL", "test/PNEUMONIA"]
        jpeg_folders(root, dict.fromkeys(split, 1))
    run_dir = tmp_path / "run"
    with pytest.raises(DataRootError) as info:
        train(["data=fruits", f"data.root={root}"], run_dir)
    msg = str(info.value)
    assert str(root) in msg
    problem = {
        "missing": "does not exist",
        "empty": "is empty",
        "chest_xray_layout": "does not match",
    }
    assert f"Data root {root} {problem[case]}" in msg, msg
    assert "Training/" in msg and "Test/" in msg, msg  # the expected layout
    assert "python -m fruitnet.data.download fruits" in msg, msg
    if case == "chest_xray_layout":
        assert "train/" in msg and "data.layout=split" in msg, msg
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()


def test_bad_data_root_on_the_command_line_names_path_layout_and_download(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    proc = cli(
        "-m",
        "fruitnet.train",
        "data=fruits",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={empty}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    # The last thing printed is the whole explanation, as fruitnet's line, with no traceback.
    assert "Traceback" not in out, out[-3000:]
    tail = out[out.rindex("fruitnet: ") :]
    assert f"Data root {empty / 'fruits-360'} does not exist" in tail, out[-3000:]
    assert "Training/<class name>/*.jpg" in tail and "Test/<class name>/*.jpg" in tail
    assert "python -m fruitnet.data.download fruits" in tail
    assert not (tmp_path / "run" / "checkpoints").exists()


# --------------------------------------------------------------------------- class folders


def test_empty_class_folder_is_dropped_with_a_warning_and_no_index_gap(tmp_path):
    root = jpeg_folders(
        tmp_path / "ds",
        {"Training/apple": 3, "Training/banana": 0, "Training/cherry": 3, "Test/apple": 1,
         "Test/cherry": 1},
    )  # fmt: skip
    dm = datamodule(root)
    with pytest.warns(DataWarning, match=r"dropped 1 empty class folder.*'banana'"):
        dm.setup("fit")
    assert dm.class_names == ["apple", "cherry"] and dm.num_classes == 2
    for split in (dm.train_set, dm.val_set, dm.test_set):
        assert set(samples(split)) <= {("apple", 0), ("cherry", 1)}
    assert {y for _, y in samples(dm.train_set)} == {0, 1}  # contiguous: no gap where banana was


def test_test_classes_are_mapped_by_name_and_unknown_ones_are_refused(tmp_path):
    # Test lacks "apple": labels must still follow the training index (banana=1, cherry=2).
    root = jpeg_folders(
        tmp_path / "subset",
        {"Training/apple": 2, "Training/banana": 2, "Training/cherry": 2, "Test/banana": 1,
         "Test/cherry": 1},
    )  # fmt: skip
    dm = datamodule(root)
    with pytest.warns(DataWarning, match="'apple'"):
        dm.setup("fit")
    assert sorted(set(samples(dm.test_set))) == [("banana", 1), ("cherry", 2)]

    # Test has a class training does not know (and one spelled in another case).
    bad = jpeg_folders(
        tmp_path / "unknown",
        {"Training/apple": 2, "Training/banana": 2, "Test/Banana": 1, "Test/durian": 1},
    )
    with pytest.raises(ClassMismatchError) as info:
        datamodule(bad).setup("fit")
    msg = str(info.value)
    assert "'durian'" in msg and str(bad / "Test" / "durian") in msg
    assert "'Banana'" in msg and "training has 'banana'" in msg


# --------------------------------------------------------------------------- corrupt files


def _bad_file(path: Path, kind: str) -> None:
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text_named_jpg":
        path.write_text("<html><body>404 Not Found</body></html>")
    else:  # truncated: the first half of a real JPEG
        Image.new("RGB", (64, 64), (90, 10, 200)).save(path, quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "text_named_jpg"])
def test_corrupt_image_is_named_or_skipped_and_reported(kind, tmp_path, tiny_data):
    root = jpeg_folders(
        tmp_path / "ds", {f"{s}/{c}": 4 for s in ("Training", "Test") for c in "ab"}
    )
    bad = root / "Training" / "a" / "bad.jpg"
    _bad_file(bad, kind)

    # Default (skip_corrupt=false): the run stops before training, naming the file.
    run_dir = tmp_path / "run"
    with pytest.raises(CorruptImageError) as info:
        train(["data=folder", f"data.root={root}", "data.image_size=32"], run_dir, tiny_data)
    assert info.value.path == bad and str(bad) in str(info.value)
    assert "data.skip_corrupt=true" in str(info.value)
    assert not (run_dir / "checkpoints").exists()

    # skip_corrupt=true: one warning listing the file, and the file is in no split.
    dm = datamodule(root, skip_corrupt=True)
    with pytest.warns(DataWarning, match="skipped 1 corrupt image") as record:
        dm.setup("fit")
    assert any(str(bad) in str(w.message) for w in record)
    assert [p for p, _ in dm.skipped] == [bad]
    assert bad not in dm.train_set.paths + dm.val_set.paths + dm.test_set.paths
    assert len(dm.train_set) + len(dm.val_set) == 8  # the 8 good training images


# --------------------------------------------------------------------------- image modes


def _write_mode(path: Path, mode: str) -> tuple[int, int, int]:
    """Write one image in `mode`; returns the RGB it must load as (a uniform colour)."""
    w, h = (8000, 6000) if mode == "huge" else (60, 40)
    if mode == "L":
        Image.new("L", (w, h), 100).save(path)
        return (100, 100, 100)
    if mode == "RGBA":  # fully transparent red: composited on white
        Image.new("RGBA", (w, h), (255, 0, 0, 0)).save(path)
        return (255, 255, 255)
    if mode == "P":
        Image.new("RGB", (w, h), (0, 0, 255)).convert("P").save(path)
        return (0, 0, 255)
    if mode == "CMYK":  # C=0 M=255 Y=255 K=0 is red; saved as an Adobe CMYK JPEG
        Image.new("CMYK", (w, h), (0, 255, 255, 0)).save(path, quality=95)
        return (255, 0, 0)
    if mode == "I;16":  # 16-bit grayscale PNG, half scale: must be scaled, not clipped to 255
        Image.fromarray(np.full((h, w), 32896, np.uint16)).save(path)
        assert Image.open(path).mode.startswith("I")
        return (128, 128, 128)
    Image.new("RGB", (w, h), (20, 180, 60)).save(path, quality=95)  # huge
    return (20, 180, 60)


MODES = {"L": "png", "RGBA": "png", "P": "png", "CMYK": "jpg", "I;16": "png", "huge": "jpg"}


@pytest.mark.parametrize(
    "mode", list(MODES), ids=["gray", "rgba", "palette", "cmyk", "16bit", "8000px"]
)
def test_any_image_mode_or_size_loads_as_3_channels_at_the_configured_size(mode, tmp_path):
    path = tmp_path / f"img.{MODES[mode]}"
    expected = torch.tensor(_write_mode(path, mode), dtype=torch.int16)
    for norm, size in ((False, 48), (True, 224)):
        t0 = time.perf_counter()
        img = load_image(path, **image_spec(preprocess_spec(norm, size)))
        assert img.dtype == torch.uint8 and tuple(img.shape) == (3, size, size), (norm, img.shape)
        center = img[:, size // 2, size // 2].to(torch.int16)
        assert (center - expected).abs().max() <= 3, (norm, center.tolist(), expected.tolist())
        assert time.perf_counter() - t0 < 10

    # Through the datamodule: a class of such files batches with the others.
    root = jpeg_folders(
        tmp_path / "ds", {"Training/a": 2, "Training/b": 2, "Test/a": 1, "Test/b": 1}
    )
    for k in range(2):
        (root / "Training" / "b" / f"m{k}.{MODES[mode]}").write_bytes(path.read_bytes())
    dm = datamodule(root, image_size=48, val_fraction=0.0, batch_size=8)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and tuple(images.shape) == (6, 3, 48, 48)
    assert labels.tolist().count(1) == 4


def test_a_photo_over_89_mpx_loads_without_a_warning_and_one_over_the_cap_is_refused(tmp_path):
    """Pillow warns above 89 Mpx with a bare `warnings.warn(` line; fruitnet reads real photos up
    to `MAX_PIXELS` silently and refuses a larger image itself, naming the file and its size."""
    from fruitnet.data.io import MAX_PIXELS

    big = tmp_path / "scan.jpg"
    Image.new("L", (10000, 9000), 90).save(big, quality=50)  # 90 Mpx, a scanned X-ray's size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_image(big)
        assert load_image(big, size=32)[0, 16, 16].item() in range(87, 94)
    assert not caught, [str(w.message) for w in caught]

    root = jpeg_folders(
        tmp_path / "ds", {"Training/a": 2, "Training/b": 2, "Test/a": 1, "Test/b": 1}
    )
    bomb = root / "Training" / "b" / "bomb.png"
    side = int(MAX_PIXELS**0.5) + 16
    Image.new("1", (side, side)).save(bomb)  # 1 bit per pixel: a small file, a huge image
    for read in (check_image, lambda p: load_image(p, size=32), lambda p: datamodule(root).setup()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CorruptImageError) as info:
                read(bomb)
        assert not caught, [str(w.message) for w in caught]
        msg = str(info.value)
        assert str(bomb) in msg and f"{side} x {side} px" in msg and "268 Mpx" in msg, msg


# --------------------------------------------------------------------------- loader workers


def test_more_loader_workers_than_cpus_are_capped_in_one_line(caplog):
    from fruitnet.data.host import loader_workers, usable_cpus

    with caplog.at_level(logging.WARNING, logger="fruitnet.data.host"):
        assert loader_workers(64, cpu_count=2) == 2
        assert loader_workers("3", cpu_count=4) == 3 and loader_workers(0, cpu_count=1) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "data.num_workers=64 is more than the 2 CPU(s) this process may use: using 2 loader workers"
    ]
    assert loader_workers("auto", cpu_count=8) == 4 and loader_workers(None, cpu_count=2) == 0
    assert ImageFolderDataModule(root="x", num_workers=10_000).num_workers == usable_cpus()
    for bad in (-1, "many", True, 1.5):
        with pytest.raises(ValueError, match=r"data.num_workers must be auto or an integer >= 0"):
            loader_workers(bad)
