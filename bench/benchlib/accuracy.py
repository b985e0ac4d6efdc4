"""Accuracy: the basic CNN trained by fruitnet.train in fp32 and in bf16, same seeds and epochs."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchlib.compose import SEED, compose_cfg, device_overrides


def accuracy_overrides(args, root: Path, precision: str, seed: int, batch: int) -> list[str]:
    epochs = 1 if args.quick else args.epochs
    overrides = [
        "model=cnn",
        "data=fruits",
        f"data.root={root}",
        "norm=false",
        "data.cache=true",
        f"data.batch_size={batch}",
        f"trainer.max_epochs={epochs}",
        f"trainer.precision={precision}",
        f"seed={seed}",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.model_size.latency=false",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false",
    ]
    if args.quick:
        overrides.append("data.max_samples_per_class=4")
    return overrides


def measure_accuracy(args, root: Path, device: torch.device, work: Path) -> list[dict]:
    """The basic CNN through fruitnet.train.run, fp32 vs bf16, same seeds and epochs."""
    # The whole run as the entry point does it, in this process (the tests call it the same way)
    from fruitnet.train import run

    batch = 32 if args.quick else 128
    out = []
    for seed in range(SEED, SEED + args.acc_seeds):
        for precision in ("32-true", "bf16-mixed"):
            overrides = accuracy_overrides(args, root, precision, seed, batch)
            run_dir = work / f"acc-{precision}-{seed}"
            t0 = time.perf_counter()
            cfg = compose_cfg(overrides + device_overrides(device), run_dir, args.cache_root)
            results = run(cfg)
            wall = time.perf_counter() - t0
            steps_per_epoch = results["global_step"] / max(1, results["epochs"])
            val = results["val_acc"]
            row = {
                "precision": results["precision"],
                "seed": seed,
                "epochs": results["epochs"],
                "test_acc": 100.0 * results["test_acc"],
                "val_acc": 100.0 * val if val is not None else None,
                "train_images": int(steps_per_epoch * batch),
                "train_images_per_s": results["train_images_per_s"],
                "wall_s": wall,
                "batch": batch,
            }
            print(
                f"[accuracy] cnn {precision} seed {seed}: test acc {row['test_acc']:.2f} % after "
                f"{1 if args.quick else args.epochs} epoch(s), {row['train_images_per_s']:.0f} train img/s, "
                f"{wall:.0f} s",
                flush=True,
            )
            out.append(row)
    return out
