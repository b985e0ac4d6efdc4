"""`ImageFolderDataModule`: any image-folder dataset (Fruits-360, chest X-ray, your own folder).

Datasets yield uint8 ``3 x S x S`` tensors; float conversion, augmentation and normalization run
on whole batches in `on_after_batch_transfer` (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import statistics
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from fruitnet.data.io import load_image
from fruitnet.data.scan import DataWarning, Sample, scan_dataset, stratified_split
from fruitnet.data.transforms import AUGMENTS, BatchTransform, image_spec, preprocess_spec

log = logging.getLogger(__name__)

__all__ = [
    "BatchedDataset",
    "EpochSampler",
    "ImageFolderDataModule",
    "ImageListDataset",
    "ResumableDataLoader",
    "auto_image_size",
    "auto_num_workers",
    "compute_dataset_stats",
    "inverse_frequency_weights",
]

# Bump when load_image's output for the same file and spec changes, so caches keyed on the spec
# (decoded images, dataset stats) are rebuilt instead of reused.
DECODE_VERSION = "1"
_STATS_CHOICES = ("imagenet", "dataset")
_SAMPLERS = ("none", "balanced")


class ImageListDataset(Dataset):
    """``(uint8 3 x S x S image, int label)`` pairs from a file list.

    With ``cache`` (a `fruitnet.data.cache.DecodedImageCache` over the same paths) items come
    from the decoded-image memmap instead of ``decode``; after `preload` they come from one
    uint8 tensor held on a device. `take` fetches a whole batch at once (see `BatchedDataset`).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        decode: Callable[[Path], torch.Tensor] | None,
        cache: Any = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = [int(y) for y in labels]
        self.decode = decode
        self.cache = cache
        self.images: torch.Tensor | None = None  # N x 3 x S x S uint8, set by preload()
        self.targets: torch.Tensor | None = None  # the labels, on the same device

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], decode, cache_factory=None):
        paths = [p for p, _ in samples]
        cache = cache_factory(paths) if (cache_factory is not None and paths) else None
        return cls(paths, [y for _, y in samples], decode, cache)

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: Sequence[int]) -> ImageListDataset:
        """A dataset over images already in memory (``N x 3 x S x S`` uint8), e.g. in benchmarks."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be N x C x H x W uint8, got {images.dtype} {images.shape}"
            )
        dataset = cls([Path(f"<memory>/{i}") for i in range(len(labels))], labels, None)
        dataset.images = images
        dataset.targets = torch.as_tensor(dataset.labels, device=images.device)
        return dataset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[i], self.labels[i]
        image = self.cache[i] if self.cache is not None else self.decode(self.paths[i])
        return image, self.labels[i]

    def take(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``indices`` as one ``(B x 3 x S x S uint8, B int64)`` batch.

        Equal to collating ``self[i]`` one by one, but preloaded and cached images come out of
        one indexing op instead of B Python calls and a stack.
        """
        if self.images is not None:
            idx = torch.as_tensor(indices, dtype=torch.long).to(self.images.device)
            # index_select copies whole images (6x faster than x[idx] for uint8 on the CPU).
            return self.images.index_select(0, idx), self.targets.index_select(0, idx)
        if self.cache is not None:
            images = self.cache.take(indices)
        else:
            images = torch.stack([self.decode(self.paths[i]) for i in indices])
        return images, torch.tensor([self.labels[i] for i in indices], dtype=torch.long)

    def preload(self, device: torch.device | str = "cpu") -> None:
        """Hold every image as one uint8 tensor on ``device`` (from the cache, else decoded)."""
        if self.images is None:
            if self.cache is not None:
                images = self.cache.as_tensor()
            elif self.paths:
                images = torch.stack([self.decode(p) for p in self.paths])
            else:
                images = torch.empty((0, 3, 0, 0), dtype=torch.uint8)
            self.images = images
        self.images = self.images.to(device)
        self.targets = torch.as_tensor(self.labels, dtype=torch.long, device=self.images.device)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded split (known once preloaded or cached; else 0)."""
        if self.images is not None:
            return self.images.numel() * self.images.element_size()
        if self.cache is not None and len(self):
            return int(np.prod(self.cache.shape))
        return 0


class BatchedDataset(Dataset):
    """`ImageListDataset` as the DataLoader sees it: ``__getitems__`` hands whole index batches to
    `ImageListDataset.take`, and `collate_batch` passes the result through.

    A wrapper rather than a method of the dataset, so code that loads the dataset with the
    default collate (dataset stats, user code) keeps getting single items.
    """

    def __init__(self, dataset: ImageListDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.take(indices)


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate for `BatchedDataset`: the batch is already collated."""
    return batch


class EpochSampler(Sampler[int]):
    """Training order as a function of ``(seed, epoch)`` only: a permutation, or with ``weights``
    a weighted draw with replacement (the balanced sampler).

    Lightning calls `set_epoch` before every epoch, so epoch ``e`` has the same order however many
    times the loader was rebuilt (a resumed run builds a new one). Used without Lightning, each
    pass moves on to the next epoch's order. `skip` drops the first indices of the next pass
    (set by `ResumableDataLoader` on a mid-epoch resume).
    """

    def __init__(self, n: int, seed: int, weights: Sequence[float] | None = None) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = self.generator()
        self.epoch += 1
        if self.weights is None:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        skip, self.skip = self.skip, 0
        yield from order[skip:].tolist()


class ResumableDataLoader(DataLoader):
    """The training loader: its order comes from `EpochSampler`, and on a mid-epoch resume it
    skips the batches the restored fit loop counts as done, so the resumed run sees exactly the
    batches an uninterrupted one would. ``batches_done`` reads that count from the trainer
    (0 at every epoch start); it is asked when iteration starts, after Lightning restored its loops.

    `state_dict`/`load_state_dict` only mark the loader as resumable to Lightning: the epoch
    (`set_epoch`) and the batches done both come from Lightning's restored loops. The count is not
    taken from the loader at save time: after an interrupt inside a step (Ctrl-C) Lightning repeats
    that step, and only its own progress counter says so.

    Its own generator (reseeded per epoch) seeds the workers, so iterating never draws from the
    global torch RNG (which drives dropout and augmentation and is restored on resume).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        sampler: EpochSampler,
        batches_done: Callable[[], int] = lambda: 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, sampler=sampler, generator=torch.Generator(), **kwargs)
        self.batches_done = batches_done

    def __iter__(self):
        # A generator: the underlying iterator (and the sampler pass) starts at the first next(),
        # after Lightning's set_epoch() and after it restored its loop counters.
        sampler: EpochSampler = self.sampler
        self.generator.manual_seed(sampler.seed * 1_000_003 + sampler.epoch)
        sampler.skip = int(self.batches_done()) * self.batch_size
        yield from super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------- "auto" helpers


def auto_num_workers(cpu_count: int | None = None) -> int:
    """DataLoader workers for this machine: ``min(4, cpus - 1)``, and 0 on 1-2 CPUs.

    On 2 cores, decoding 100x100 JPEGs is ~3 % of a basic-CNN epoch, so a worker process cannot
    win much, and it competes with the training step's own threads: measured on
    fruits-360-small, 0 and 1 workers were equal within noise. 0 also avoids forking.
    """
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if cpus <= 2:
        return 0
    return min(4, cpus - 1)


def auto_image_size(paths: Sequence[Path], seed: int = 42, sample: int = 200) -> int:
    """Median shorter side of up to ``sample`` images, rounded to a multiple of 8, in [8, 512]."""
    if not paths:
        raise ValueError("no training images to measure an image size from")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    sides = []
    for i in chosen:
        with Image.open(paths[int(i)]) as img:  # header only: no pixel decoding
            sides.append(min(img.size))
    median = statistics.median(sides)
    size = int(min(512, max(8, np.floor(median / 8 + 0.5) * 8)))
    log.info(
        "image_size=auto: median shorter side of %d training images is %g px -> %d px "
        "(set data.image_size to override)",
        len(sides),
        median,
        size,
    )
    return size


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """Per-class loss weights ``1 / count``, scaled so their mean is 1."""
    c = np.asarray(counts, dtype=np.float64)
    if (c <= 0).any():
        raise ValueError(f"every class needs training images for class weights, got {list(c)}")
    w = 1.0 / c
    return [float(x) for x in w / w.mean()]


def compute_dataset_stats(dataset: Dataset, *, batch_size: int = 256, num_workers: int = 0):
    """Per-channel mean and std of a uint8 image dataset, in 0..1 units (float64 sums)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    n = 0
    for images, _ in loader:
        # float32 per-image sums are exact enough (pairwise summation of <= 512^2 values);
        # the running totals across the dataset are float64.
        x = images.float()
        total += x.sum((2, 3)).double().sum(0)
        total_sq += x.square().sum((2, 3)).double().sum(0)
        n += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        raise ValueError("cannot compute dataset statistics of an empty dataset")
    total /= 255.0
    total_sq /= 255.0**2
    mean = total / n
    std = (total_sq / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return [float(v) for v in mean], [float(v) for v in std]


def _files_digest(paths: Sequence[Path], key: str) -> str:
    # Same fingerprint as the decoded-image cache (path, size, mtime), so a touched file counts.
    try:
        from fruitnet.data.cache import cache_digest
    except ImportError:  # pragma: no cover - cache.py is part of the package
        h = hashlib.sha256(key.encode())
        for p in paths:
            st = Path(p).stat()
            h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return h.hexdigest()[:32]
    return cache_digest(paths, key)


def _default_cache_dir() -> Path:
    try:
        from fruitnet.data.cache import default_cache_dir
    except ImportError:  # pragma: no cover
        return Path.home() / ".cache" / "fruitnet"
    return default_cache_dir()


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# data.cache=auto turns the decoded-image cache on when the decoded set fits in this share of the
# free disk under the cache dir and of the available RAM.
CACHE_AUTO_SHARE = 0.5


def available_ram() -> int | None:
    """Bytes of RAM available without swapping (Linux MemAvailable, else free pages); None if
    unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _free_disk(path: Path) -> int | None:
    """Free bytes on the filesystem that holds ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    for p in (path, *path.parents):
        if p.exists():
            with contextlib.suppress(OSError):
                return shutil.disk_usage(p).free
            return None
    return None


def _auto_bool(value: Any, default: bool) -> bool:
    return default if value in ("auto", None) else bool(value)


# --------------------------------------------------------------------------- the datamodule


class ImageFolderDataModule(L.LightningDataModule):
    """Image-folder classification data: layouts, splits, caching, batch-level preprocessing.

    Every argument is keyword-only and named like its Hydra key in ``conf/data/``.
    After `setup`: ``num_classes``, ``class_names``, ``input_size``, ``task``,
    ``class_weights``, ``preprocess``, ``layout``, ``data_root``, ``split_counts``,
    ``class_counts``, ``num_train``/``num_val``/``num_test``, ``batch_transform``.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike,
        layout: str = "auto",
        norm: bool = False,
        image_size: int | None = None,
        batch_size: int = 128,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool | str = "auto",
        val_fraction: float = 0.1,
        use_given_val: bool = False,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        augment: str = "none",
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
    ) -> None:
        super().__init__()
        _check_choice("augment", augment, AUGMENTS)
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
        self.batch_size = int(batch_size)
        self.num_workers = auto_num_workers() if num_workers in ("auto", None) else int(num_workers)
        self.pin_memory = _auto_bool(pin_memory, torch.cuda.is_available())
        self.persistent_workers = _auto_bool(persistent_workers, self.num_workers > 0) and (
            self.num_workers > 0
        )
        self.val_fraction = float(val_fraction)
        self.use_given_val = bool(use_given_val)
        self.split = tuple(float(f) for f in split)
        self.augment = augment
        self.skip_corrupt = bool(skip_corrupt)
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be true, false or auto, got {cache!r}")
        self.cache_arg = cache
        self.cache = cache is True  # "auto" is decided in setup(), once the split sizes are known
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()
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

        # Filled by setup().
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.input_size: int | None = None
        self.task: str | None = None
        self.class_weights: list[float] | None = None
        self.preprocess: dict | None = None
        self.layout: str | None = None
        self.data_root: Path | None = None
        self.split_counts: dict[str, int] = {}
        self.class_counts: dict[str, list[int]] = {}
        self.skipped: list[tuple[Path, str]] = []
        self.duplicates = 0
        self.batch_transform: BatchTransform | None = None
        self.train_set: ImageListDataset | None = None
        self.val_set: ImageListDataset | None = None
        self.test_set: ImageListDataset | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ lightning hooks

    def prepare_data(self) -> None:
        """Nothing to do for a folder already on disk (downloads are an explicit command)."""

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
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
        if size is None:
            size = auto_image_size([p for p, _ in train], seed=self.seed)
        spec = preprocess_spec(self.norm, size)
        decode = functools.partial(load_image, **image_spec(spec))
        if self.cache_arg == "auto":
            self.cache = self._cache_fits(len(train) + len(val) + len(test), spec["size"])
        factory = self._cache_factory(spec, decode) if self.cache else None
        try:
            self.train_set = ImageListDataset.from_samples(train, decode, factory)
            self.val_set = ImageListDataset.from_samples(val, decode, factory)
            self.test_set = ImageListDataset.from_samples(test, decode, factory)
        except OSError as err:
            if self.cache_arg != "auto":
                raise
            # auto promised speed, not a cache: an unwritable or full cache dir decodes instead.
            log.warning("data.cache=auto: cannot build the decoded-image cache (%s); decoding", err)
            self.cache = False
            self.train_set = ImageListDataset.from_samples(train, decode)
            self.val_set = ImageListDataset.from_samples(val, decode)
            self.test_set = ImageListDataset.from_samples(test, decode)

        if self.stats == "dataset":
            spec["mean"], spec["std"] = self._dataset_stats(spec)
        self.preprocess = spec
        self.input_size = spec["size"]
        self.split_counts = {"train": len(train), "val": len(val), "test": len(test)}
        self.class_counts = {
            name: np.bincount([y for _, y in s], minlength=self.num_classes).tolist()
            for name, s in (("train", train), ("val", val), ("test", test))
        }
        self.class_weights = self._resolve_class_weights()
        self.batch_transform = BatchTransform(
            spec["mean"], spec["std"], augment=self.augment, channels_last=self.channels_last
        )
        self.duplicates = scan.duplicates
        log.info(
            "data: %s layout at %s: %d classes, train/val/test = %d/%d/%d images%s, input %d px "
            "(norm=%s, stats=%s, workers=%d) in %.1f s",
            self.layout,
            self.data_root,
            self.num_classes,
            len(train),
            len(val),
            len(test),
            # links reaching a file twice in one class: counted once
            f" ({scan.duplicates} duplicate files skipped)" if scan.duplicates else "",
            self.input_size,
            self.norm,
            self.stats,
            self.num_workers,
            time.monotonic() - t0,
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
        labels = [y for _, y in scan.train]
        if scan.layout == "single":
            parts = stratified_split(labels, self.split, self.seed)
            train, val, test = ([scan.train[i] for i in idx] for idx in parts)
            return train, val, test
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
        train_idx, val_idx = stratified_split(
            labels, (1 - self.val_fraction, self.val_fraction), self.seed
        )
        return [scan.train[i] for i in train_idx], [scan.train[i] for i in val_idx], test

    def _cache_fits(self, n_images: int, size: int) -> bool:
        """`cache=auto`: on when the decoded set (``n x 3 x size x size`` bytes) takes at most
        `CACHE_AUTO_SHARE` of the free disk under ``cache_dir`` and of the available RAM (the page
        cache must hold it for later epochs to skip the disk)."""
        nbytes = n_images * 3 * size * size
        disk = _free_disk(self.cache_dir)
        ram = available_ram()
        limits = [b for b in (disk, ram) if b is not None]
        fits = bool(limits) and all(nbytes <= CACHE_AUTO_SHARE * b for b in limits)

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

    def _cache_factory(self, spec: dict, decode) -> Callable[[list[Path]], Any]:
        from fruitnet.data.cache import DecodedImageCache

        key = json.dumps({"decode": DECODE_VERSION, **image_spec(spec)}, sort_keys=True)

        def make(paths: list[Path]) -> DecodedImageCache:
            cache = DecodedImageCache(paths, decode, cache_dir=self.cache_dir, key=key)
            # Build here, in the main process, so DataLoader workers only ever map the file.
            cache.build()
            return cache

        return make

    def _dataset_stats(self, spec: dict) -> tuple[list[float], list[float]]:
        paths = self.train_set.paths
        key = json.dumps({"stats": DECODE_VERSION, **image_spec(spec)}, sort_keys=True)
        path = self.cache_dir / f"stats-{_files_digest(paths, key)}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(path.read_text())
            log.info("dataset stats: reusing %s", path)
            return list(data["mean"]), list(data["std"])
        t0 = time.monotonic()
        mean, std = compute_dataset_stats(self.train_set, num_workers=self.num_workers)
        log.info(
            "dataset stats over %d training images: mean=%s std=%s (%.1f s) -> %s",
            len(paths),
            [round(m, 4) for m in mean],
            [round(s, 4) for s in std],
            time.monotonic() - t0,
            path,
        )
        try:
            _atomic_write_json(
                path,
                {
                    "mean": mean,
                    "std": std,
                    "images": len(paths),
                    "key": key,
                    "root": str(self.data_root),
                },
            )
        except OSError as e:
            log.warning("could not cache dataset stats in %s: %s", path, e)
        return mean, std

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
        if dataset.images is not None and dataset.images.device == device:
            return
        if device.type == "cuda" and dataset.nbytes:
            free, _ = torch.cuda.mem_get_info(device)
            if dataset.nbytes > free // 2:
                raise ValueError(
                    f"data.on_device=true: the {split} split ({len(dataset)} images, "
                    f"{dataset.nbytes / 2**30:.2f} GiB as uint8) would take more than half of "
                    f"the {free / 2**30:.2f} GiB free on {device}; set data.on_device=false "
                    "(data.cache=true still keeps JPEG decoding out of the training step)"
                )
        t0 = time.monotonic()
        dataset.preload(device)
        log.info(
            "data.on_device: %s split on %s (%d images, %.1f MiB) in %.1f s",
            split,
            device,
            len(dataset),
            dataset.nbytes / 2**20,
            time.monotonic() - t0,
        )

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
