"""Scale-out: DDP with two CPU processes (gloo), and the SLURM launcher config.

The DDP run is a real `python -m fruitnet.train trainer=ddp ...` subprocess: Lightning re-launches
the script once per extra rank (its subprocess launcher passes Hydra's run dir along), so this
checks what a user gets on a multi-GPU node, minus the GPUs.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import TINY_DATA, cli, compose_cfg, read_results
from omegaconf import OmegaConf

from fruitnet.module import ClassifierModule


@pytest.mark.parametrize(
    ("model", "arch"),
    [("cnn", None), pytest.param("torchvision", "shufflenet_v2_x0_5", marks=pytest.mark.slow)],
)
def test_ddp_two_cpu_processes_write_one_result_and_a_loadable_checkpoint(model, arch, tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"  # fresh data: rank 0 generates it
    chosen = [f"model={model}", *([f"model.arch={arch}", "model.pretrained=false"] if arch else [])]
    proc = cli(
        "-m", "fruitnet.train", *chosen, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.max_epochs=1", "data=synthetic", *(f"data.{k}={v}" for k, v in TINY_DATA.items()),
        "data.batch_size=8", "data.num_workers=0", "callbacks.model_size.latency=false",
        "callbacks.progress_bar=null", "callbacks.model_summary=null",
        f"paths.root_dir={tmp_path}", f"paths.data_dir={data}", f"hydra.run.dir={run}",
        env={"FRUITNET_OFFLINE": "1"},
        timeout=420,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    # Rank 0 alone writes results.json; rank 1 made no run directory of its own.
    assert sorted(tmp_path.rglob("results.json")) == [run / "results.json"]
    assert not (tmp_path / "logs").exists()
    results = read_results(run)
    assert results["epochs"] == 1 and results["num_classes"] == 3
    assert 0.0 <= results["test_acc"] <= 1.0 and results["val_acc"] is not None
    # One complete data tree, no temp folder left by a second, racing generator
    assert not [p.name for p in (data / "synthetic").iterdir() if ".tmp-" in p.name]

    ckpt = results["best_ckpt"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["model_name"] == model
    assert not any(k.startswith("module.") for k in state["state_dict"])
    module = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu")
    module.eval()
    with torch.no_grad():
        assert module(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def _submitit_available() -> bool:
    return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None


@pytest.mark.skipif(
    not _submitit_available(),
    reason="hydra-submitit-launcher not installed (pip install 'fruitnet[slurm]')",
)
@pytest.mark.parametrize(
    ("trainer", "extra", "tasks", "nodes"),
    [
        ("gpu", [], 1, 1),
        ("ddp", [], 2, 1),
        ("ddp", ["trainer.devices=4", "trainer.num_nodes=2"], 4, 2),
    ],
)
def test_slurm_launcher_matches_the_trainer(trainer, extra, tasks, nodes, tmp_path):
    cfg = compose_cfg(["hydra/launcher=slurm", f"trainer={trainer}", *extra], tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == tasks
    assert launcher["nodes"] == nodes
    assert launcher["timeout_min"] > 0 and launcher["max_num_timeout"] == 0
    assert launcher["name"] == "fruitnet-train"
    assert launcher["submitit_folder"].endswith("/.submitit/%j")

    # The plugin accepts it: build the launcher as Hydra would (nothing is submitted).
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    params = {k: v for k, v in launcher.items() if k != "_target_"}
    assert SlurmLauncher(**params).params["tasks_per_node"] == tasks
