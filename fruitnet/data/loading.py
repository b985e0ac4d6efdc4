"""What the DataLoaders iterate: image-list datasets, whole-batch fetching, and the seeded,
resumable training order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

if TYPE_CHECKING:
    from fruitnet.data.scan import Sample

log = logging.getLogger(__name__)

__all__ = [
    "BatchedDataset",
    "EpochSampler",
    "ImageListDataset",
    "ResumableDataLoader",
    "collate_batch",
    "preload_split",
]


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


def preload_split(dataset: ImageListDataset, device: torch.device, split: str) -> None:
    """`data.on_device`: hold the ``split`` dataset's uint8 images on ``device``, unless they are
    there already. Refuses a split that would take more than half of a GPU's free memory."""
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
