"""Numbers measured on a dataset: the input size, class weights, and the per-channel mean and
std (computed once per file list and decode spec, then read back from a small JSON file)."""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fruitnet.data.cache import cache_digest
from fruitnet.files import write_json

log = logging.getLogger(__name__)

__all__ = [
    "auto_image_size",
    "cached_dataset_stats",
    "compute_dataset_stats",
    "inverse_frequency_weights",
]


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


def cached_dataset_stats(
    dataset: Dataset,
    paths: Sequence[Path],
    key: str,
    cache_dir: Path,
    *,
    root: Path | None = None,
    num_workers: int = 0,
) -> tuple[list[float], list[float]]:
    """`compute_dataset_stats` of ``dataset`` (the images of ``paths``, decoded as ``key``
    says), kept in ``cache_dir`` under the fingerprint the decoded-image cache uses, so a touched
    file or another decode spec computes them again."""
    path = Path(cache_dir) / f"stats-{cache_digest(paths, key)}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(path.read_text())
        log.info("dataset stats: reusing %s", path)
        return list(data["mean"]), list(data["std"])
    t0 = time.monotonic()
    mean, std = compute_dataset_stats(dataset, num_workers=num_workers)
    log.info(
        "dataset stats over %d training images: mean=%s std=%s (%.1f s) -> %s",
        len(paths),
        [round(m, 4) for m in mean],
        [round(s, 4) for s in std],
        time.monotonic() - t0,
        path,
    )
    record = {"mean": mean, "std": std, "images": len(paths), "key": key, "root": str(root)}
    try:
        write_json(path, record)
    except OSError as e:
        log.warning("could not cache dataset stats in %s: %s", path, e)
    return mean, std
