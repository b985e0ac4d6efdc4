"""Train-step images/s on pre-made random tensors, so it times the step, not data: (a) the study's
plain fp32 loop and network, (b) the same loop with fruitnet's network and settings, (c)
fruitnet.train's module, callbacks, logger and Trainer fed through fruitnet's own loaders."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from study_loop import study_model
from torch import nn

from benchlib.compose import NUM_CLASSES, SEED, compose_cfg, device_overrides
from fruitnet.config import instantiate_group
from fruitnet.data import BatchTransform, ImageFolderDataModule, ImageListDataset, preprocess_spec
from fruitnet.models import create_model
from fruitnet.timing import sync


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


def steps_for(rate: float, batch: int, seconds: float, lo: int, hi: int) -> int:
    """Steps that take about `seconds` at `rate` images/s, clamped to [lo, hi]."""
    if seconds <= 0 or rate <= 0:
        return lo
    return max(lo, min(hi, math.ceil(seconds * rate / batch)))


def random_pool(batch: int, size: int, pool: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pool` batches of random uint8 images and labels (the same pixels for a, b and c)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (pool * batch, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (pool * batch,), generator=g)
    return images, labels


def result(steps: int, batch: int, seconds: float, per_step: list[float]) -> dict:
    """images/s over the whole window, and over the median step (CPU only: robust to spikes)."""
    median = statistics.median(per_step) if per_step else None
    return {
        "images_per_s": steps * batch / seconds,
        "median_images_per_s": batch / median if median else None,
        "steps": steps,
        "seconds": seconds,
    }


def plain_loop(
    name: str,
    size: int,
    norm: bool,
    batch: int,
    device: torch.device,
    *,
    study: bool,
    channels_last: bool,
    dtype: torch.dtype | None,
    optimizer_kwargs: dict,
    warmup: int,
    seconds: float,
    min_steps: int,
    max_steps: int,
) -> dict:
    """The study's training loop on pre-made float batches; images/s over the steps after warm-up.

    ``study``: the study's network (layer order) instead of fruitnet's; ``optimizer_kwargs``
    go to Adam (fruitnet's config adds ``fused``).
    """
    torch.manual_seed(SEED)
    if study:
        model = study_model(name, size, NUM_CLASSES).to(device)
    else:
        model = create_model(name, num_classes=NUM_CLASSES, input_size=size).to(device)
    images, labels = random_pool(batch, size, pool=2, seed=SEED)
    spec = preprocess_spec(norm, size)
    x_all = BatchTransform(spec["mean"], spec["std"])(images).to(device)  # float, normalised
    batches = list(zip(x_all.split(batch), labels.to(device).split(batch), strict=True))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), **optimizer_kwargs)
    criterion = nn.CrossEntropyLoss()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        x = x.contiguous(memory_format=fmt)
        optimizer.zero_grad()
        with autocast:
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    model.train()
    warm = []
    for i in range(warmup):
        sync(device)
        t0 = time.perf_counter()
        step(i)
        sync(device)
        warm.append(time.perf_counter() - t0)
    # The window is timed as one total (a per-step sync would stall a GPU); the fastest warm-up
    # step sizes it.
    steps = steps_for(batch / min(warm), batch, seconds, min_steps, max_steps)
    per_step = []
    sync(device)
    t0 = last = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
        if device.type == "cpu":  # free on the CPU; a GPU would stall on a per-step sync
            now = time.perf_counter()
            per_step.append(now - last)
            last = now
    sync(device)
    return result(steps, batch, time.perf_counter() - t0, per_step)


class InMemoryDataModule(ImageFolderDataModule):
    """ImageFolderDataModule with the files swapped for in-memory uint8 tensors.

    Its loaders are the real ones (`ImageFolderDataModule._loader`: epoch sampler, batched fetch,
    `on_after_batch_transfer` with the BatchTransform: uint8 -> float, normalisation), over
    `ImageListDataset.from_tensors`, as with data.cache=true or data.on_device=true: only JPEG
    decoding is left out.
    """

    def __init__(self, images, labels, *, steps: int, batch_size: int, norm: bool, size: int, **kw):
        super().__init__(root=None, norm=norm, image_size=size, batch_size=batch_size, **kw)
        # Enough images for `steps` batches in one epoch: the pool repeated.
        n = steps * batch_size
        reps = -(-n // len(labels))
        self.images = images.repeat(reps, 1, 1, 1)[:n]
        self.labels = labels.repeat(reps)[:n].tolist()

    def setup(self, stage: str | None = None) -> None:
        if self.batch_transform is not None:
            return
        spec = preprocess_spec(self.norm, self.image_size)
        self.num_classes = NUM_CLASSES
        self.class_names = [f"class_{i}" for i in range(NUM_CLASSES)]
        self.input_size = spec["size"]
        self.task = "multiclass"
        self.class_weights = None
        self.preprocess = spec
        self.layout = "memory"
        self.train_set = ImageListDataset.from_tensors(self.images, self.labels)
        self.val_set = ImageListDataset([], [], None)
        self.test_set = ImageListDataset([], [], None)
        self.batch_transform = BatchTransform(
            spec["mean"], spec["std"], augment=self.augment, channels_last=self.channels_last
        )


class StepTimer(L.Callback):
    """Wall time from the end of the last warm-up batch to the end of the last batch.

    Everything Lightning does between those points (fetch, transfer, batch transform, step,
    logging, progress bar, callbacks) is in the window. On a GPU it syncs only at those two
    batches; on the CPU it also keeps every step's time (for the median).
    """

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = self.warmup + self.steps - 1
        if batch_idx < self.warmup - 1 or batch_idx > last:
            return
        cpu = pl_module.device.type == "cpu"
        if cpu or batch_idx in (self.warmup - 1, last):
            sync(pl_module.device)
            self.marks.append(time.perf_counter())

    def result(self, batch: int) -> dict:
        if len(self.marks) < 2:
            raise RuntimeError(f"the trainer stopped before {self.warmup + self.steps} batches")
        per_step = [b - a for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]
        cpu_steps = per_step if len(per_step) == self.steps else []
        return result(self.steps, batch, self.marks[-1] - self.marks[0], cpu_steps)


def lightning_loop(
    name: str,
    size: int,
    norm: bool,
    batch: int,
    device: torch.device,
    *,
    steps: int,
    warmup: int,
    run_dir: Path,
    cache_root: Path,
) -> dict:
    """fruitnet.train's module, callbacks, logger and trainer (its defaults) on in-memory data."""
    from omegaconf import open_dict

    from fruitnet.assemble import build_module, build_trainer

    overrides = [
        f"model={name}",
        f"norm={str(norm).lower()}",
        "model.pretrained=false",  # random init: same speed, no download
        f"data.batch_size={batch}",
        # Fit-start only, outside the timed window: off to save bench time and console noise.
        "callbacks.model_size.latency=false",
        "callbacks.model_summary=null",
    ]
    cfg = compose_cfg(overrides + device_overrides(device), run_dir, cache_root)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = warmup + steps
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_model_summary = False

    L.seed_everything(SEED, verbose=False)
    images, labels = random_pool(batch, size, pool=2, seed=SEED)
    dm = InMemoryDataModule(
        images,
        labels,
        steps=warmup + steps,
        batch_size=batch,
        norm=norm,
        size=size,
        channels_last=cfg.data.channels_last,
    )
    dm.setup("fit")
    module = build_module(cfg, dm)
    timer = StepTimer(warmup, steps)
    callbacks = [*instantiate_group(cfg.get("callbacks")), timer]
    trainer = build_trainer(cfg, callbacks, instantiate_group(cfg.get("logger")))
    trainer.fit(module, datamodule=dm)
    return {**timer.result(batch), "precision": str(trainer.precision)}
