"""fruitnet.data: splits, the datamodule's batches, loaders, caches, the real samples."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from image_trees import fruits_tree, make_tree
from PIL import Image

import fruitnet.data.host as host_mod
import fruitnet.data.stats as stats_mod
from fruitnet.data import (
    BatchTransform,
    DataWarning,
    ImageFolderDataModule,
    auto_num_workers,
    preprocess_spec,
    scan_dataset,
    stratified_split,
)
from fruitnet.data.loading import EpochSampler, ImageListDataset
from fruitnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

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
