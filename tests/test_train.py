"""The spine: config composition, the train entry point for every model, multirun, results.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, REPO, cli, compose_cfg, read_results, train
from omegaconf import OmegaConf

from fruitnet.models import list_families, list_models

REQUIRED_KEYS = {
    "model", "data", "norm", "num_classes", "class_names", "params", "checkpoint_mb",
    "test_acc", "val_acc", "epochs", "wall_s", "train_images_per_s", "device", "precision",
    "best_ckpt",
}  # fmt: skip


def _options(group: str) -> list[str]:
    return sorted(
        p.stem for p in Path(CONF_DIR, group).glob("*.yaml") if not p.stem.startswith("_")
    )


GROUP_OPTIONS = [
    (group, option)
    for group in [
        "data",
        "model",
        "optimizer",
        "scheduler",
        "trainer",
        "callbacks",
        "logger",
        "debug",
        "experiment",
        "hparams_search",
    ]  # fmt: skip
    for option in _options(group)
]


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_every_config_option_composes_and_resolves(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "folder":
        overrides.append("data.root=/some/folder")
    cfg = compose_cfg(overrides, tmp_path)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(job, resolve=True)
    assert resolved["model"]["name"] in list_models() + list_families()
    assert resolved["data"]["norm"] is resolved["norm"]


@pytest.mark.parametrize("norm", [True, False])
def test_norm_is_a_plain_boolean_that_data_follows(norm, tmp_path):
    cfg = compose_cfg([f"norm={str(norm).lower()}", "data=fruits"], tmp_path)
    assert cfg.norm is norm and cfg.data.norm is norm


@pytest.mark.parametrize("model", list_models())
def test_fast_dev_run_every_model(model, tmp_path, data_dir):
    results = train(
        [f"model={model}", "model.pretrained=false", "trainer.fast_dev_run=true"],
        tmp_path,
        data_dir,
    )
    assert results["model"] == model
    assert results["num_classes"] == 10
    on_disk = read_results(tmp_path)
    assert on_disk.keys() >= REQUIRED_KEYS
    assert 0.0 <= on_disk["test_acc"] <= 1.0
    assert on_disk["params"] > 0 and on_disk["flops"] > 0


def test_cnn_norm_true_feeds_224(tmp_path, data_dir):
    results = train(["model=cnn", "norm=true", "trainer.fast_dev_run=true"], tmp_path, data_dir)
    assert results["input_size"] == 224 and results["norm"] is True


def test_two_epochs_learn_the_synthetic_set_and_results_json(tmp_path, data_dir):
    results = train(["trainer.max_epochs=2"], tmp_path, data_dir)
    on_disk = read_results(tmp_path)
    assert on_disk == json.loads(json.dumps(results, default=str))
    # 10 classes: chance is 10 %; the embedded set must be learnable in two epochs.
    assert on_disk["test_acc"] > 0.5, on_disk["test_acc"]
    assert on_disk["epochs"] == 2
    assert len(on_disk["class_names"]) == on_disk["num_classes"] == 10
    assert Path(on_disk["best_ckpt"]).is_file() and on_disk["checkpoint_mb"] > 0
    assert on_disk["train_images_per_s"] > 0
    assert on_disk["precision"] in {"bf16-mixed", "32-true"}
    assert set(on_disk["per_class_acc"]) == set(on_disk["class_names"])
    assert len(on_disk["confusion_matrix"]) == 10
    # The checkpoint holds primitives only: it loads with weights_only=True.
    ckpt = torch.load(on_disk["best_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model_name"] == "cnn"
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_real_fruits_sample_one_epoch(tmp_path, shared_data):
    root = shared_data / "fruits-360-sample"
    results = train(
        ["model=cnn", "data=fruits", f"data.root={root}", "trainer.max_epochs=1"], tmp_path
    )
    assert results["num_classes"] == 95
    assert results["data"] == "fruits" or results["data"] == "?"
    assert read_results(tmp_path)["test_acc"] is not None


def test_configs_work_from_a_non_editable_install(tmp_path):
    """Build the wheel, install it without -e into a folder, and compose from outside the repo."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
                   check=True, capture_output=True)  # fmt: skip
    wheel = next(wheel_dir.glob("fruitnet-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    # every module is in the wheel (importing is no check: the editable install's finder would
    # still find a module the wheel lacks)
    import zipfile

    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "fruitnet").rglob("*.py")}
    assert modules - shipped == set()
    env = {"PYTHONPATH": str(site)}
    # the configs and the built-in net config (package data) ship in the wheel: ProxylessNAS-GPU
    # builds from it
    where = cli("-c", "import fruitnet.config as c, fruitnet.models.proxyless as p; "
                "print(c.__file__, c.CONFIG_PATH); print(p.BUILTIN_ARCH); "
                "print(sum(x.numel() for x in p.ProxylessNASNets().parameters()))",
                cwd=tmp_path, env=env)  # fmt: skip
    assert where.returncode == 0, where.stderr
    config_line, arch_line, params = where.stdout.splitlines()
    assert config_line.startswith(str(site)) and "pkg://fruitnet.conf" in config_line
    assert arch_line.startswith(str(site)) and params == "7119848"
    # the README's `--cfg job` prints the composed config
    proc = cli("-m", "fruitnet.train", "--cfg", "job", "model=proxyless", "data=fruits", "norm=true",
               cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "name: proxyless" in proc.stdout and "layout: fruits" in proc.stdout
    assert "norm: true" in proc.stdout
    search = cli("-m", "fruitnet.search", "--cfg", "job", "search=imagenet", cwd=tmp_path, env=env)
    assert search.returncode == 0, search.stderr
    assert "feature_mix: 1280" in search.stdout
    shutil.rmtree(site)


def test_every_trainer_argument_is_settable_from_the_command_line(tmp_path):
    import inspect

    import lightning as L

    built_by_fruitnet = {"self", "callbacks", "logger", "plugins"}
    args = set(inspect.signature(L.Trainer.__init__).parameters) - built_by_fruitnet
    cfg = compose_cfg(["trainer.fast_dev_run=true", "trainer.max_time=00:00:10:00"], tmp_path)
    missing = args - set(cfg.trainer)
    assert not missing, f"conf/trainer/default.yaml lacks {sorted(missing)}"


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_optimizers_are_fused_as_configured(optimizer, tmp_path):
    """conf/optimizer/adam*.yaml ask for the fused kernel (a bench setting); it must reach torch."""
    from types import SimpleNamespace

    from fruitnet.assemble import build_module

    cfg = compose_cfg([f"optimizer={optimizer}", "model=cnn", "model.pretrained=false"], tmp_path)
    data = SimpleNamespace(
        num_classes=3, input_size=32, class_names=["a", "b", "c"], task="multiclass",
        class_weights=None, preprocess={"size": 32, "mean": [0.0] * 3, "std": [1.0] * 3},
    )  # fmt: skip
    opt = build_module(cfg, data).configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert opt.defaults["fused"] is True
    cfg.optimizer.fused = False
    opt = build_module(cfg, data).configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert not opt.defaults["fused"]


def test_mixup_blends_training_batches_and_their_targets_only():
    from fruitnet.module import ClassifierModule

    def module(mixup: float) -> ClassifierModule:
        return ClassifierModule(
            model_name="cnn", num_classes=3, input_size=32, mixup=mixup,
            optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        )  # fmt: skip

    net = module(0.4)
    seen = []
    net.net.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    net.train()
    loss, logits, labels = net._step((x, y))
    # torchvision's MixUp blends each image with the one before it by one weight lam
    rolled = x.roll(1, 0)
    lam = float(((seen[0] - rolled) / (x - rolled)).flatten()[0])
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(seen[0], lam * x + (1 - lam) * rolled, rtol=1e-4, atol=1e-4)
    # the loss is the same blend of the two labels' losses; the metrics keep each image's label
    ce = torch.nn.functional.cross_entropy
    want = lam * ce(logits.float(), y) + (1 - lam) * ce(logits.float(), y.roll(1, 0))
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-4)
    assert labels is y
    net.eval()
    net._step((x, y))
    torch.testing.assert_close(seen[-1], x)
    with pytest.raises(ValueError, match="model.mixup"):
        module(-0.1)
