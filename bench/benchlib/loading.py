"""Data-loading images/s: torchvision ImageFolder + PIL + ToTensor (the study) against fruitnet's
decoded-image cache (data.cache=true, cache already built, second epoch) and data.on_device."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from benchlib.compose import SEED
from fruitnet.data import ImageFolderDataModule, auto_num_workers
from fruitnet.timing import sync


def iterate(loader, device: torch.device, max_batches: int | None, transform=None) -> tuple:
    """(images, seconds) for one pass over `loader`, batches moved to `device` as float."""
    images = 0
    sync(device)
    t0 = time.perf_counter()
    for i, (x, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = x.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        images += len(x)
    sync(device)
    return images, time.perf_counter() - t0


def timed_epoch(loader, device, max_batches, transform=None, **extra) -> dict:
    """The second of two passes (the first warms the page cache and starts the workers)."""
    iterate(loader, device, max_batches, transform)
    n, s = iterate(loader, device, max_batches, transform)
    return {"images": n, "seconds": s, "images_per_s": n / s, **extra}


def measure_data(args, root: Path, device: torch.device) -> dict:
    """Study: ImageFolder + PIL + ToTensor; fruitnet: the decoded cache, second epoch."""
    batch = 16 if args.quick else args.data_batch
    workers = auto_num_workers() if args.workers == "auto" else int(args.workers)
    max_batches = 2 if args.quick else None

    study_set = torchvision.datasets.ImageFolder(
        root / "Training", transform=torchvision.transforms.ToTensor()
    )
    study = DataLoader(study_set, batch_size=batch, shuffle=True, num_workers=workers)
    pil = timed_epoch(study, device, max_batches)
    print(f"[data] ImageFolder + PIL + ToTensor: {pil['images_per_s']:8.0f} img/s", flush=True)

    dm = ImageFolderDataModule(
        root=root, layout="fruits", norm=False, image_size=100, batch_size=batch,
        num_workers=workers, cache=True, cache_dir=args.cache_root / "decoded",
        max_samples_per_class=2 if args.quick else None, seed=SEED,
    )  # fmt: skip
    t0 = time.perf_counter()
    dm.setup("fit")  # decodes everything once into the cache (or maps an existing one)
    setup_s = time.perf_counter() - t0
    transform = dm.batch_transform.to(device)
    cache = timed_epoch(dm.train_dataloader(), device, max_batches, transform, setup_s=setup_s)
    print(f"[data] fruitnet decoded cache:       {cache['images_per_s']:8.0f} img/s", flush=True)

    # data.on_device=true: the same cached split held as one tensor on the device.
    dm.on_device = True
    t0 = time.perf_counter()
    dm.train_set.preload(device)
    preload_s = time.perf_counter() - t0
    resident = timed_epoch(dm.train_dataloader(), device, max_batches, transform, setup_s=preload_s)
    print(f"[data] fruitnet data.on_device=true: {resident['images_per_s']:8.0f} img/s", flush=True)
    return {
        "batch": batch, "workers": workers, "pil": pil, "cache": cache, "on_device": resident,
        "ratio": cache["images_per_s"] / pil["images_per_s"],
    }  # fmt: skip
