"""Bad inputs and hostile events: one test (or one parametrized test) per row of the issue table.

Each test asserts the message a user sees (it must name the file, key or path at fault) or the
outcome (the run works, with a warning). Runs are in-process on tiny synthetic data unless the
row is about the command line itself.

The rows "run killed with SIGKILL mid-epoch" and "SIGTERM / Ctrl-C" are in
tests/test_kill_resume.py; archive members landing outside the download folder are refused in
tests/test_download.py (test_zip_traversal_refused, test_tar_traversal_refused, ...).
"""

from __future__ import annotations

import ast
import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, compose_cfg, read_results, train
from hydra.errors import ConfigCompositionException, MissingConfigException
from PIL import Image

from fruitnet.callbacks import NonFiniteLossError
from fruitnet.checkpoints import CheckpointError, load_checkpoint
from fruitnet.data import (
    ClassMismatchError,
    CorruptImageError,
    DataRootError,
    DataWarning,
    ImageFolderDataModule,
    check_image,
    generate_synthetic_fruits,
    image_spec,
    load_image,
    preprocess_spec,
)
from fruitnet.models import WeightsFileError
from fruitnet.module import ClassifierModule

# 3 classes at 32 px: ~114 images, generated once per session into the shared data_dir.
TINY_DATA = {"num_classes": 3, "train_per_class": 30, "test_per_class": 8, "image_size": 32}
TINY = [*(f"data.{k}={v}" for k, v in TINY_DATA.items()), "data.batch_size=16"]
ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]
COLORS = [(200, 30, 40), (240, 200, 40), (60, 160, 60), (50, 70, 170), (120, 40, 130)]


def make_tree(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    """`{"Training/apple": 3, ...}` -> that many small JPEGs per folder (0 = an empty folder)."""
    for i, (rel, n) in enumerate(sorted(counts.items())):
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            color = tuple((c + 13 * k) % 256 for c in COLORS[i % len(COLORS)])
            Image.new("RGB", (size, size), color).save(d / f"{k}.jpg", quality=90)
    return root


def datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    args = {"layout": "fruits", "image_size": 32, "batch_size": 4, "num_workers": 0}
    return ImageFolderDataModule(root=root, **{**args, **kwargs})


def samples(dataset) -> list[tuple[str, int]]:
    """(class folder name, label) of every item of an ImageListDataset."""
    return [(p.parent.name, y) for p, y in zip(dataset.paths, dataset.labels, strict=True)]


def cli_train(*overrides: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fruitnet.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_data(data_dir) -> Path:
    generate_synthetic_fruits(data_dir / "synthetic", **TINY_DATA, seed=0)
    return data_dir


# --------------------------------------------------------------------------- data.root


@pytest.mark.parametrize("case", ["missing", "empty", "chest_xray_layout"])
def test_bad_data_root_fails_before_training_naming_path_layout_and_download(case, tmp_path):
    root = tmp_path / ("chest_xray" if case == "chest_xray_layout" else "fruits-360")
    if case == "empty":
        root.mkdir()
    elif case == "chest_xray_layout":
        split = ["train/NORMAL", "train/PNEUMONIA", "test/NORMAL", "test/PNEUMONIA"]
        make_tree(root, dict.fromkeys(split, 1))
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
    proc = cli_train(
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
    root = make_tree(
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
    root = make_tree(
        tmp_path / "subset",
        {"Training/apple": 2, "Training/banana": 2, "Training/cherry": 2, "Test/banana": 1,
         "Test/cherry": 1},
    )  # fmt: skip
    dm = datamodule(root)
    with pytest.warns(DataWarning, match="'apple'"):
        dm.setup("fit")
    assert sorted(set(samples(dm.test_set))) == [("banana", 1), ("cherry", 2)]

    # Test has a class training does not know (and one spelled in another case).
    bad = make_tree(
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
    root = make_tree(tmp_path / "ds", {f"{s}/{c}": 4 for s in ("Training", "Test") for c in "ab"})
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
    root = make_tree(tmp_path / "ds", {"Training/a": 2, "Training/b": 2, "Test/a": 1, "Test/b": 1})
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

    root = make_tree(tmp_path / "ds", {"Training/a": 2, "Training/b": 2, "Test/a": 1, "Test/b": 1})
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


# --------------------------------------------------------------------------- config names


@pytest.mark.parametrize(
    ("override", "options"),
    [
        ("model=foo", ["cnn", "proxyless", "resnet50"]),
        ("data=foo", ["chest_xray", "folder", "fruits", "synthetic"]),
        ("optimizer=foo", ["adam", "adamw", "sgd"]),
    ],
)
def test_unknown_group_option_lists_the_valid_ones(override, options, tmp_path):
    group = override.split("=")[0]
    with pytest.raises(MissingConfigException) as info:
        compose_cfg([override], tmp_path)
    msg = str(info.value)
    assert f"Could not find '{group}/foo'" in msg
    assert f"Available options in '{group}':" in msg
    listed = msg.split(f"Available options in '{group}':")[1].split("Config search path")[0].split()
    assert set(options) <= set(listed), listed


def test_typo_in_a_key_names_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["trainer.max_epoch=1"], tmp_path)
    assert "Could not override 'trainer.max_epoch'" in str(info.value)
    assert "Key 'max_epoch' is not in struct" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=-3", "trainer.max_epochs must be an integer >= -1 (-1: no limit), got -3"),
        ("trainer.max_steps=-2", "trainer.max_steps must be an integer >= -1 (-1: no limit), got -2"),
        ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps must be an integer >= 0"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer >= 1"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs must be an integer >= -1 (-1: no limit), got 2.5"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be a number of batches"),
        ("trainer.limit_val_batches=-1", "trainer.limit_val_batches must be a number of batches"),
    ],
)  # fmt: skip
def test_a_bad_trainer_count_is_refused_before_the_data_is_read(override, message, tmp_path):
    from fruitnet.config import check_config

    with pytest.raises(ValueError, match=re.escape(message)):
        check_config(compose_cfg([override], tmp_path))
    fine = ["trainer.max_epochs=-1", "trainer.limit_train_batches=0.5"]
    check_config(compose_cfg(fine, tmp_path))


def test_norm_must_be_a_boolean(tmp_path):
    cfg = compose_cfg(["norm=maybe"], tmp_path)
    assert cfg.norm == "maybe"  # Hydra takes it as a string: train.run has to refuse it
    with pytest.raises(ValueError, match=r"norm must be true or false, got 'maybe'"):
        train(["norm=maybe"], tmp_path)


def test_unknown_model_on_the_command_line_is_readable(tmp_path):
    proc = cli_train("model=foo", f"paths.root_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert "Could not find 'model/foo'" in err, err[-3000:]
    for name in ("cnn", "proxyless", "resnet50"):
        assert f"\t{name}\n" in err
    assert "Traceback" not in err  # one message, not a stack trace


# --------------------------------------------------------------------------- model input size


def test_cnn_with_norm_true_takes_224_px_and_sizes_its_flatten_layer(tmp_path, tiny_data):
    results = train(
        [*TINY, "model=cnn", "norm=true", "++trainer.fast_dev_run=true"], tmp_path, tiny_data
    )
    assert results["input_size"] == 224 and results["norm"] is True
    # 4 conv stages (3->16->32->64->128), 224 / 2**4 = 14 -> flatten 128 * 14 * 14 = 25088.
    convs = sum(9 * i * o + o for i, o in [(3, 16), (16, 32), (32, 64), (64, 128)])
    assert results["params"] == convs + (25088 * 625 + 625) + (625 * 3 + 3)
    assert 0.0 <= results["test_acc"] <= 1.0


# --------------------------------------------------------------------------- batch size, val split


def test_batch_size_larger_than_the_dataset_warns_and_trains(tmp_path, tiny_data):
    with pytest.warns(DataWarning, match=r"batch_size=1000 is larger than the train split"):
        results = train([*ONE_EPOCH, "data.batch_size=1000"], tmp_path, tiny_data)
    assert results["global_step"] == 1  # one (partial) batch, not zero
    assert results["test_acc"] is not None and results["val_acc"] is not None


@pytest.mark.parametrize("case", ["single_image_class", "no_val_at_all"])
def test_a_class_without_val_images_warns_and_trains(case, tmp_path, tiny_data):
    counts = {"Training/a": 6, "Training/b": 6, "Training/c": 6, "Test/a": 2, "Test/b": 2,
              "Test/c": 2}  # fmt: skip
    extra = []
    if case == "single_image_class":
        counts["Training/c"] = 1
        match = "single image, kept in training only"
    else:
        extra = ["data.val_fraction=0.0"]
        match = None
    root = make_tree(tmp_path / "ds", counts)
    overrides = ["data=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                 "trainer.max_epochs=1", *extra]  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        results = train(overrides, tmp_path / "run", tiny_data)
    if match:
        assert any(match in str(w.message) for w in record), [str(w.message) for w in record]
    assert results["num_classes"] == 3 and results["class_names"] == ["a", "b", "c"]
    assert results["test_acc"] is not None and results["global_step"] >= 1


# --------------------------------------------------------------------------- NaN / inf loss


@pytest.mark.parametrize("monitor", ["val/acc", "null"], ids=["default_monitor", "no_monitor"])
def test_non_finite_loss_stops_naming_the_step_and_the_last_good_checkpoint(
    monitor, monkeypatch, tmp_path, tiny_data
):
    """NaN from step 5 on; a checkpoint every 2 steps. With the default model_checkpoint
    (monitor=val/acc) Lightning defers every periodic save, last.ckpt included, until the first
    validation, so a first-epoch failure has no checkpoint to name: see the report / conf fix."""
    step = ClassifierModule._step

    def poisoned(self, batch):
        loss, logits, y = step(self, batch)
        if self.training and self.trainer.global_step >= 5:
            loss = loss * float("nan")
        return loss, logits, y

    monkeypatch.setattr(ClassifierModule, "_step", poisoned)
    overrides = [
        *ONE_EPOCH,
        "data.batch_size=4",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"callbacks.model_checkpoint.monitor={monitor}",
    ]
    with pytest.raises(NonFiniteLossError) as info:
        train(overrides, tmp_path, tiny_data)
    msg = str(info.value)
    assert "training loss is nan at global step 5 (epoch 0)" in msg, msg
    found = re.search(r"last good checkpoint: (\S+) \(resume with ckpt_path=", msg)
    assert found, msg
    good = Path(found.group(1))
    assert good.parent == tmp_path / "checkpoints"
    ckpt = load_checkpoint(good)
    assert ckpt["global_step"] == 4  # the newest periodic checkpoint before the bad step
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_huge_learning_rate_is_stopped_by_the_guard(tmp_path, tiny_data):
    with pytest.raises(NonFiniteLossError, match=r"training loss is (nan|inf|-inf) at global step"):
        train(
            [*TINY, "trainer.max_epochs=3", "data.batch_size=4", "optimizer=sgd",
             "optimizer.lr=1e10"],
            tmp_path,
            tiny_data,
        )  # fmt: skip


# --------------------------------------------------------------------------- checkpoint files


def _real_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}, "global_step": 1}, path)
    return path


def _broken(path: Path, kind: str) -> Path:
    if kind == "truncated":
        data = _real_checkpoint(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    else:  # a valid torch file that holds a tensor, not a checkpoint dict
        torch.save(torch.ones(3), path)
    return path


KEYS = ["ckpt_path", "init_from", "model.weights"]


@pytest.mark.parametrize("kind", ["truncated", "text", "tensor"])
@pytest.mark.parametrize("key", KEYS)
def test_bad_checkpoint_file_is_a_clear_error_naming_it(key, kind, tmp_path, tiny_data):
    path = _broken(tmp_path / f"bad-{kind}.ckpt", kind)
    run_dir = tmp_path / "run"
    with pytest.raises((CheckpointError, WeightsFileError)) as info:
        train([*ONE_EPOCH, f"{key}={path}"], run_dir, tiny_data)
    msg = str(info.value)
    assert str(path) in msg, msg
    reason = {"truncated": ("truncated", "cannot load", "could not be read"),
              "text": ("cannot load", "could not be read", "not a PyTorch"),
              "tensor": ("not a checkpoint", "expected a state_dict")}[kind]  # fmt: skip
    assert any(r in msg for r in reason), msg
    assert not (run_dir / "checkpoints").exists()  # failed before any training


class _Payload:
    """Pickles into `os.system("touch <marker>")`: runs the command if ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("key", KEYS)
def test_checkpoint_with_pickled_code_is_refused_unexecuted(key, tmp_path, tiny_data):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 1, "x": _Payload(marker)}, path)
    with pytest.raises((CheckpointError, WeightsFileError)) as info:
        train([*ONE_EPOCH, f"{key}={path}"], tmp_path / "run", tiny_data)
    msg = str(info.value)
    assert str(path) in msg and "pickled Python objects" in msg, msg
    assert not marker.exists(), "the pickled payload was executed"


def _package_sources() -> list[Path]:
    files = sorted((REPO / "fruitnet").rglob("*.py"))
    assert len(files) > 10
    return files


def test_package_never_loads_pickles_or_hub_code():
    """Every torch.load passes weights_only=True; nothing passes weights_only=False; no
    torch.hub.load (which runs a repository's hubconf.py), no pickle.load(s)."""
    problems = []
    for path in _package_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno}: {name}"
            kw = {k.arg: k.value for k in node.keywords}
            # Trainer.save_checkpoint's weights_only says what to save (False: a full resume
            # point), not how to load: it unpickles nothing.
            saving = name.endswith("save_checkpoint")
            if (
                "weights_only" in kw
                and not saving
                and not (
                    isinstance(kw["weights_only"], ast.Constant)
                    and kw["weights_only"].value is True
                )
            ):
                problems.append(f"{where}(weights_only={ast.unparse(kw['weights_only'])})")
            if name.endswith("torch.load") and "weights_only" not in kw:
                problems.append(f"{where} without weights_only=True")
            if name.endswith(("hub.load", "hub.load_state_dict_from_url")):
                problems.append(where)
            if name in ("pickle.load", "pickle.loads", "dill.load", "cloudpickle.load"):
                problems.append(where)
            if name.endswith("load") and kw.get("allow_pickle") is not None:
                value = kw["allow_pickle"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}(allow_pickle={ast.unparse(value)})")
    assert not problems, "\n".join(problems)
    # The same as text, for code built in strings or hidden from the AST walk above.
    for path in _package_sources():
        text = path.read_text()
        for line in text.splitlines():
            assert "weights_only=False" not in line or "save_checkpoint(" in line, (path, line)
        assert "trust_repo" not in text, path


# --------------------------------------------------------------------------- disk full


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS], ids=["disk_full", "read_only"])
def test_failed_checkpoint_write_is_clear_and_keeps_the_previous_one(
    err, monkeypatch, tmp_path, tiny_data
):
    real_save = torch.save
    calls = []

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # files only: in-memory saves (size probes) pass
            calls.append(Path(f))
            if len(calls) >= 2:  # the first checkpoint gets written, then the disk is full
                raise OSError(err, os.strerror(err))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    overrides = [
        *ONE_EPOCH,
        "data.batch_size=4",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.monitor=null",
    ]
    with pytest.raises(CheckpointError) as info:
        train(overrides, tmp_path, tiny_data)
    monkeypatch.undo()

    # The failed periodic save (and InterruptCheckpoint's attempt after it) name their file.
    ckpt_dir = tmp_path / "checkpoints"
    messages = [str(e) for e in _chain(info.value) if isinstance(e, CheckpointError)]
    assert messages and all("could not write checkpoint" in m for m in messages), messages
    assert all(os.strerror(err) in m for m in messages), messages
    assert all("previous checkpoint (if any) is intact" in m for m in messages), messages
    named = {Path(m.split("could not write checkpoint ")[1].split(": ")[0]) for m in messages}
    assert all(p.parent == ckpt_dir for p in named), named
    # The checkpoint written before the disk filled up is whole; no temp file is left behind.
    left = sorted(ckpt_dir.iterdir())
    assert len(left) == 1 and left[0].suffix == ".ckpt", left
    assert load_checkpoint(left[0])["global_step"] == 2
    assert len(calls) >= 2


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


# --------------------------------------------------------------------------- run directories


FAKE_KAGGLE_KEY = f"fake-kaggle-key-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def two_concurrent_runs(tmp_path_factory, tiny_data):
    """Two fast_dev_run CLI runs started together, with a fake Kaggle key in the environment."""
    base = tmp_path_factory.mktemp("concurrent")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KAGGLE_USERNAME": "someone",
           "KAGGLE_KEY": FAKE_KAGGLE_KEY}  # fmt: skip
    cmd = [
        *(sys.executable, "-m", "fruitnet.train", "trainer=cpu", *TINY),
        *("++trainer.fast_dev_run=true", "callbacks.progress_bar=null", "data.num_workers=0"),
        *("callbacks.model_size.latency=false", f"paths.root_dir={base}"),
        f"paths.data_dir={tiny_data}",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=300)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return base, outputs


def test_two_runs_started_together_get_distinct_run_directories(two_concurrent_runs):
    base, _ = two_concurrent_runs
    runs = sorted((base / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        results = read_results(run)
        assert results["run_dir"] == str(run)  # each wrote its own results, none overwritten
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    # Names carry microseconds: runs in the same second still differ.
    assert all(len(r.name.split("_")[-1].split("-")) == 4 for r in runs), runs


def test_credentials_never_reach_logs_or_results(two_concurrent_runs):
    base, outputs = two_concurrent_runs
    written = [p for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in written)
    leaked = [str(p) for p in written if FAKE_KAGGLE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert not any(FAKE_KAGGLE_KEY in out for out in outputs)
