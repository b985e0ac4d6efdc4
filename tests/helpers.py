"""Helpers shared by the tests: compose the config like the CLI does, run a training in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")

# Fast settings for CPU tests: no progress bar, no latency timing, no workers.
FAST = [
    "trainer=cpu",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.model_size.latency=false",
    "data.num_workers=0",
]

# The synthetic set and the recipe of conftest's `trained_cnn`: ~20 steps, so the model learns
# something and its predictions are not all one class (which would make "same accuracy" weak).
# 3 classes at 32 px: ~114 images (the `tiny_data` fixture writes them once per session)
TINY_DATA = {"num_classes": 3, "train_per_class": 30, "test_per_class": 8, "image_size": 32}
TINY = [*(f"data.{k}={v}" for k, v in TINY_DATA.items()), "data.batch_size=16"]
ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]
TRAINED_DATA = ["data=synthetic", "data.train_per_class=20", "data.test_per_class=8"]
TRAINED_RECIPE = [*TRAINED_DATA, "trainer.max_epochs=2", "data.batch_size=16"]


def compose_cfg(
    overrides: list[str], run_dir: Path, data_dir: Path | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose `train.yaml` with overrides; paths point into run_dir (and a shared data dir)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(run_dir)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir / "logs")
        cfg.paths.cache_dir = str(run_dir / "cache")
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
    return cfg


def train(overrides: list[str], run_dir: Path, data_dir: Path | None = None) -> dict[str, Any]:
    from fruitnet.train import run

    return run(compose_cfg(FAST + overrides, run_dir, data_dir))


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout=600):
    """Run `python <args>` as a user would; returns the CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "results.json").read_text())


class Pace(L.Callback):
    """Sleeps after every training step: slows the run down without changing any number."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


def jpeg_folders(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    """`{"Training/apple": 3, ...}` -> that many small JPEGs per folder (0 = an empty folder),
    one colour per folder, shaded per image."""
    from PIL import Image

    colors = [(200, 30, 40), (240, 200, 40), (60, 160, 60), (50, 70, 170), (120, 40, 130)]
    for i, (rel, n) in enumerate(sorted(counts.items())):
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            color = tuple((c + 13 * k) % 256 for c in colors[i % len(colors)])
            Image.new("RGB", (size, size), color).save(d / f"{k}.jpg", quality=90)
    return root
