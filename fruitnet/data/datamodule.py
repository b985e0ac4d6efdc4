"""`ImageFolderDataModule`: any image-folder dataset (Fruits-360, chest X-ray, your own folder).

Datasets yield uint8 ``3 x S x S`` tensors; float conversion, augmentation and normalization run
on whole batches in `on_after_batch_transfer` (see docs/ARCHITECTURE.md). The datasets and
loaders it hands out are in `fruitnet.data.loading`, the measured numbers in `fruitnet.data.stats`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from fruitnet.data.cache import DecodedImageCache, default_cache_dir
from fruitnet.data.host import CACHE_AUTO_SHARE, cache_fits, loader_workers
from fruitnet.data.io import DECODE_VERSION, load_image
from fruitnet.data.loading import (
    BatchedDataset,
    EpochSampler,
    ImageListDataset,
    ResumableDataLoader,
    collate_batch,
    preload_split,
)
from fruitnet.data.scan import DataWarning, Sample, carve_val, scan_dataset, stratified_split
from fruitnet.data.stats import auto_image_size, cached_dataset_stats, inverse_frequency_weights
from fruitnet.data.transforms import BatchTransform, image_spec, preprocess_spec

log = logging.getLogger(__name__)

__all__ = ["ImageFolderDataModule"]

_STATS_CHOICES = ("imagenet", "dataset")
_SAMPLERS = ("none", "balanced")
# The splits each Lightning stage reads (None: all). Only they get the decoded-image cache, so
# eval (stage "test") writes no cache for train and val; a later stage adds its own splits.
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                 "predict": ("test",), None: ("train", "val", "test")}  # fmt: skip


class ImageFolderDataModule(L.LightningDataModule):
    """Image-folder classification data: layouts, splits, caching, batch-level preprocessing.

    Every argument is keyword-only and named like its Hydra key in ``conf/data/``.
    After `setup`: ``num_classes``, ``class_names``, ``input_size``, ``task``,
    ``class_weights``, ``preprocess``, ``layout``, ``data_root``, ``split_counts``,
    ``class_counts``, ``num_train``/``num_val``/``num_test``, ``batch_transform``.
    """

    num_classes: int | None = None
    class_names: list[str] | None = None
    input_size: int | None = None
    task: str | None = None
    class_weights: list[float] | None = None
    preprocess: dict | None = None
    layout: str | None = None
    data_root: Path | None = None
    duplicates: int = 0
    batch_transform: BatchTransform | None = None
    train_set: ImageListDataset | None = None
    val_set: ImageListDataset | None = None
    test_set: ImageListDataset | None = None

    def __init__(
        self,
        *,
        root: str | os.PathLike,
        layout: str = "auto",
        norm: bool = False,
        image_size: int | None = None,
        crop_fraction: float = 1.0,
        batch_size: int = 128,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool | str = "auto",
        val_fraction: float = 0.1,
        use_given_val: bool = False,
        val_group: str | None = None,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        augment: str = "none",
        sharpness: float = 0.0,
        skip_corrupt: bool = False,
        cache: bool | str = False,
        cache_dir: str | os.PathLike | None = None,
        on_device: bool = False,
        class_weights: str | Sequence[float] | None = "none",
        sampler: str = "none",
        stats: str = "imagenet",
        seed: int = 42,
        max_samples_per_class: int | None = None,
        drop_last: bool | str = "auto",
        channels_last: bool = False,
        model_preprocess: dict | None = None,
    ) -> None:
        super().__init__()
        _check_choice("sampler", sampler, _SAMPLERS)
        _check_choice("stats", stats, _STATS_CHOICES)
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.root = Path(root).expanduser() if root is not None else None
        self.layout_arg = str(layout)
        self.norm = bool(norm)
        self.image_size = None if image_size in (None, "auto") else int(image_size)
        self.crop_fraction = crop_fraction  # < 1: keep the centre only (transforms.preprocess_spec)
        self.batch_size = int(batch_size)
        self.num_workers = loader_workers(num_workers)
        self.pin_memory = _auto_bool(pin_memory, torch.cuda.is_available())
        self.persistent_workers = _auto_bool(persistent_workers, self.num_workers > 0) and (
            self.num_workers > 0
        )
        self.val_fraction = float(val_fraction)
        self.use_given_val = bool(use_given_val)
        self.val_group = val_group  # a regex: carve val by patient or source (scan.carve_val)
        self.split = tuple(float(f) for f in split)
        self.augmentation = {"augment": augment, "sharpness": sharpness}
        BatchTransform(**self.augmentation)  # bad values stop here, before any scan
        self.skip_corrupt = bool(skip_corrupt)
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be true, false or auto, got {cache!r}")
        self.cache_arg = cache
        self.cache = None if cache == "auto" else cache  # auto: decided by setup(), on the sizes
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.on_device = bool(on_device)
        self.class_weights_arg = _class_weights_arg(class_weights)
        self.sampler = sampler
        self.stats = stats
        self.seed = int(seed)
        self.max_samples_per_class = (
            None if max_samples_per_class is None else int(max_samples_per_class)
        )
        self.drop_last = drop_last
        self.channels_last = bool(channels_last)
        self.model_preprocess = model_preprocess  # set by fruitnet.assemble.build_datamodule

        # Filled by setup(), as are the attributes set to None on the class.
        self.split_counts: dict[str, int] = {}
        self.class_counts: dict[str, list[int]] = {}
        self.skipped: list[tuple[Path, str]] = []
        self._warned: set[str] = set()

    def prepare_data(self) -> None:
        """Nothing to do for a folder already on disk (downloads are an explicit command)."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            self._use_cache(stage)
            return
        t0 = time.monotonic()
        scan = scan_dataset(
            self.root,
            self.layout_arg,
            skip_corrupt=self.skip_corrupt,
            max_per_class=self.max_samples_per_class,
            seed=self.seed,
        )
        train, val, test = self._splits(scan)
        self.layout = scan.layout
        self.data_root = scan.root
        self.skipped = scan.skipped
        self.class_names = list(scan.class_names)
        self.num_classes = len(self.class_names)
        self.task = "binary" if self.num_classes == 2 else "multiclass"

        size = 224 if self.norm else self.image_size
        if size is None and not self.model_preprocess:
            size = auto_image_size([p for p, _ in train], seed=self.seed)
        # A torchvision/timm model's own pipeline (`fruitnet.models.preprocess_for`) wins.
        spec = dict(self.model_preprocess or preprocess_spec(self.norm, size, self.crop_fraction))
        self.input_size = spec["size"]
        decode = functools.partial(load_image, **image_spec(spec))
        self.train_set, self.val_set, self.test_set = (
            ImageListDataset.from_samples(s, decode) for s in (train, val, test)
        )
        self._cache_key = json.dumps({"decode": DECODE_VERSION, **image_spec(spec)}, sort_keys=True)
        self._use_cache(stage)

        if self.stats == "dataset":
            spec["mean"], spec["std"] = self._dataset_stats(spec)
        self.preprocess = spec
        self.split_counts = {"train": len(train), "val": len(val), "test": len(test)}
        self.class_counts = {
            name: np.bincount([y for _, y in s], minlength=self.num_classes).tolist()
            for name, s in (("train", train), ("val", val), ("test", test))
        }
        self.class_weights = self._resolve_class_weights()
        self.batch_transform = BatchTransform(
            spec["mean"], spec["std"], channels_last=self.channels_last, **self.augmentation
        )
        self.duplicates = scan.duplicates
        self._log_setup(time.monotonic() - t0)

    def _use_cache(self, stage: str | None) -> None:
        """Give the splits ``stage`` reads the decoded-image cache (`data.cache`), built here in
        the main process so DataLoader workers only ever map the file."""
        names = _STAGE_SPLITS.get(stage, _STAGE_SPLITS[None])
        sets = [d for d in (getattr(self, f"{n}_set") for n in names) if d.cache is None and len(d)]
        if self.cache is None:  # auto, decided on the first stage's splits; later ones follow
            self.cache = self._cache_fits(sum(map(len, sets)), self.input_size)
        try:
            for dataset in sets if self.cache else []:
                dataset.cache = DecodedImageCache(
                    dataset.paths, dataset.decode, cache_dir=self.cache_dir, key=self._cache_key
                )
                dataset.cache.build()
        except OSError as err:
            for dataset in sets:
                dataset.cache = None
            if self.cache_arg != "auto":
                raise
            # auto promised speed, not a cache: an unwritable or full cache dir decodes instead.
            log.warning("data.cache=auto: cannot build the decoded-image cache (%s); decoding", err)
            self.cache = False

    def _log_setup(self, seconds: float) -> None:
        counts = self.split_counts
        log.info(
            "data: %s layout at %s: %d classes, train/val/test = %d/%d/%d images%s, input %d px "
            "(norm=%s, stats=%s, workers=%d) in %.1f s",
            self.layout,
            self.data_root,
            self.num_classes,
            counts["train"],
            counts["val"],
            counts["test"],
            # links reaching a file twice in one class: counted once
            f" ({self.duplicates} duplicate files skipped)" if self.duplicates else "",
            self.input_size,
            self.norm,
            self.stats,
            self.num_workers,
            seconds,
        )

    @property
    def num_train(self) -> int:
        return self.split_counts.get("train", 0)

    @property
    def num_val(self) -> int:
        return self.split_counts.get("val", 0)

    @property
    def num_test(self) -> int:
        return self.split_counts.get("test", 0)

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._loader(self.train_set, "train")

    def val_dataloader(self) -> DataLoader | list:
        self._require_setup()
        return self._loader(self.val_set, "val") if len(self.val_set) else []

    def test_dataloader(self) -> DataLoader | list:
        self._require_setup()
        return self._loader(self.test_set, "test") if len(self.test_set) else []

    def predict_dataloader(self) -> DataLoader | list:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.batch_transform is None:
            return batch
        training = self.trainer is not None and bool(self.trainer.training)
        if isinstance(batch, torch.Tensor):
            return self.batch_transform(batch, train=training)
        images, *rest = batch
        out = [self.batch_transform(images, train=training), *rest]
        return tuple(out) if isinstance(batch, tuple) else out

    # ------------------------------------------------------------------ internals

    def _splits(self, scan) -> tuple[list[Sample], list[Sample], list[Sample]]:
        if scan.layout == "single":
            parts = stratified_split([y for _, y in scan.train], self.split, self.seed)
            return tuple([scan.train[i] for i in idx] for idx in parts)
        test = list(scan.test or [])
        if self.use_given_val and scan.val:
            return list(scan.train), list(scan.val), test
        if self.use_given_val:
            warnings.warn(
                f"use_given_val=True but {scan.root} has no val folder with images; carving "
                f"{self.val_fraction:.0%} of train instead",
                DataWarning,
                stacklevel=3,
            )
        elif scan.val:
            log.info(
                "ignoring the given val folder (%d images); set data.use_given_val=true to use it",
                len(scan.val),
            )
        if self.val_fraction <= 0:
            return list(scan.train), [], test
        return (*carve_val(scan.train, self.val_fraction, self.seed, self.val_group), test)

    def _cache_fits(self, n_images: int, size: int) -> bool:
        """`cache=auto`: whether the decoded set (``n x 3 x size x size`` bytes) fits
        (`fruitnet.data.host.cache_fits`), logged with the numbers it was decided on."""
        nbytes = n_images * 3 * size * size
        fits, disk, ram = cache_fits(nbytes, self.cache_dir)

        def gib(b: int | None) -> str:
            return "unknown" if b is None else f"{b / 2**30:.1f} GiB"

        log.info(
            "data.cache=auto: decoded set %.1f MiB (%d images, %d px); free disk %s, available "
            "RAM %s -> cache %s (on when it fits in %d %% of both)",
            nbytes / 2**20,
            n_images,
            size,
            gib(disk),
            gib(ram),
            "on" if fits else "off",
            round(100 * CACHE_AUTO_SHARE),
        )
        return fits

    def _dataset_stats(self, spec: dict) -> tuple[list[float], list[float]]:
        key = json.dumps({"stats": DECODE_VERSION, **image_spec(spec)}, sort_keys=True)
        return cached_dataset_stats(
            self.train_set,
            self.train_set.paths,
            key,
            self.cache_dir,
            root=self.data_root,
            num_workers=self.num_workers,
        )

    def _resolve_class_weights(self) -> list[float] | None:
        arg = self.class_weights_arg
        if arg is None:
            return None
        if arg == "auto":
            return inverse_frequency_weights(self.class_counts["train"])
        if len(arg) != self.num_classes:
            raise ValueError(
                f"class_weights has {len(arg)} values but the data has {self.num_classes} classes"
            )
        return [float(w) for w in arg]

    def _batch_size_for(self, n: int, split: str) -> int:
        if n >= self.batch_size:
            return self.batch_size
        self._warn_once(
            f"bs-{split}",
            f"batch_size={self.batch_size} is larger than the {split} split ({n} images)"
            + ("; using one batch of all of them" if split != "train" else ""),
        )
        return self.batch_size if split == "train" else max(1, n)

    def _loader(self, dataset: ImageListDataset, split: str) -> DataLoader:
        train = split == "train"
        kwargs: dict[str, Any] = {
            "batch_size": self._batch_size_for(len(dataset), split),
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "collate_fn": collate_batch,
        }
        if self.on_device:
            self._preload(dataset, split)
        if dataset.images is not None:
            # A batch is one indexing op on a tensor in memory: worker processes would only add
            # copies, and neither they nor pinning can take a tensor already on the GPU.
            kwargs.update(num_workers=0, persistent_workers=False)
            if dataset.images.device.type != "cpu":
                kwargs["pin_memory"] = False
        batched = BatchedDataset(dataset)
        if train:
            kwargs["drop_last"] = self._train_drop_last(len(dataset))
            weights = self._balanced_weights(dataset) if self.sampler == "balanced" else None
            sampler = EpochSampler(len(dataset), self.seed, weights)
            return ResumableDataLoader(
                batched, sampler=sampler, batches_done=self._batches_done, **kwargs
            )
        return DataLoader(batched, **kwargs)

    def _preload(self, dataset: ImageListDataset, split: str) -> None:
        """`on_device`: move the split's uint8 images to the device the trainer runs on."""
        if self.trainer is not None:
            device = torch.device(self.trainer.strategy.root_device)
        else:  # outside a Trainer: where an earlier preload put it, else RAM
            device = dataset.images.device if dataset.images is not None else torch.device("cpu")
        preload_split(dataset, device, split)

    def _batches_done(self) -> int:
        """Training batches of the current epoch the fit loop counts as done: 0 at an epoch's
        start, the restored count on a mid-epoch resume."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def _train_drop_last(self, n: int) -> bool:
        if self.drop_last in ("auto", None):
            return n > self.batch_size
        if self.drop_last and n <= self.batch_size:
            self._warn_once(
                "drop_last",
                f"drop_last=True with {n} training images <= batch_size={self.batch_size} "
                "would leave no batch; keeping the partial batch",
            )
            return False
        return bool(self.drop_last)

    def _balanced_weights(self, dataset: ImageListDataset) -> list[float]:
        counts = np.bincount(dataset.labels, minlength=self.num_classes)
        return (1.0 / counts[np.asarray(dataset.labels)]).tolist()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, DataWarning, stacklevel=3)

    def _require_setup(self) -> None:
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before the dataloaders")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _class_weights_arg(value: Any) -> str | list[float] | None:
    if value in (None, "none", False):
        return None
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise ValueError(f"class_weights must be 'none', 'auto' or a list of floats, got {value!r}")
    return [float(v) for v in value]


def _auto_bool(value: Any, default: bool) -> bool:
    return default if value in ("auto", None) else bool(value)
