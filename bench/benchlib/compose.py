"""bench.py's settings: its case file, the Hydra config composed as `python -m fruitnet.train`
composes it, and the device and logging choices every measurement shares."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from benchlib.common import load_cases

CASES = load_cases("bench")
DATASET: str = CASES["dataset"]
NUM_CLASSES: int = CASES["num_classes"]
SEED: int = CASES["seed"]
TARGETS: dict[str, float] = CASES["targets"]
QUICK_BATCH: dict[str, int] = CASES["quick_batch"]


def accelerator(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


def compose_cfg(overrides: list[str], run_dir: Path, cache_root: Path):
    """`train.yaml` composed like `python -m fruitnet.train <overrides>`, paths into run_dir."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from fruitnet.config import CONFIG_MODULE, CONFIG_PATH

    GlobalHydra.instance().clear()
    if CONFIG_PATH.startswith("pkg://"):
        init = initialize_config_module(CONFIG_MODULE, version_base="1.3")
    else:
        init = initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3")
    with init:
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(run_dir)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir / "logs")
        cfg.paths.cache_dir = str(cache_root)
    return cfg


def device_overrides(device: torch.device) -> list[str]:
    # One device either way: `devices=auto` would start DDP on a multi-GPU machine.
    return (
        ["trainer=cpu"]
        if device.type == "cpu"
        else ["trainer.accelerator=gpu", "trainer.devices=1"]
    )


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "fruitnet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Expected here: few DataLoader workers on 2 cores, no val loop, short epochs.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
    warnings.filterwarnings("ignore", message=".*is larger than the.*split.*")
    # Lightning's note whenever a checkpoint callback is present and there is nothing to resume.
    warnings.filterwarnings("ignore", message=r".*\.fit\(ckpt_path=.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
