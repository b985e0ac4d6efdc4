"""The study's runs as experiment configs, and sweeps over them.

- Every conf/experiment/*.yaml is a `# @package _global_` config with a task name and tags, and
  the study ones hold the study's settings (model, optimizer, lr, momentum, epochs, batch, norm).
- Every experiment trains with fast_dev_run on tiny synthetic data (the chest ones on the real
  chest X-ray sample when it is there). The pretrained ones load a locally written ImageNet-shaped
  weights file through model.weights, so the weight-loading path runs without a download.
- The two-stage ones run as the chain they describe: stage 2 resumes stage 1 with `ckpt_path=last`.
- hparams_search=optuna: a 2-trial sweep in which one trial fails still completes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import CONF_DIR, TINY_DATA, cli, compose_cfg, read_results, train

from fruitnet.models import create_model

EXPERIMENTS = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
STAGE2 = [e for e in EXPERIMENTS if e.endswith("_stage2")]
SINGLE = [e for e in EXPERIMENTS if e not in STAGE2]
# The default run trains one experiment per distinct code path (each model and weights format,
# each scheduler, norm true/false, the binary chest task); `make test-slow` trains the rest.
# (best_proxyless stands for study_proxyless_norm: both feed 224 px to the pretrained proxyless.)
FAST_SET = {
    "study_cnn_stage1",
    "study_resnet50",
    "best_cnn",
    "best_proxyless",
    "chest_proxyless_raw",
}

# Tiny synthetic data: 3 classes, 32 px (norm=true runs still feed 224 px, by design).
TINY = [f"data.{k}={v}" for k, v in TINY_DATA.items()]
# `++`: sets the Trainer argument whether or not trainer/default.yaml lists it
FAST_DEV = "++trainer.fast_dev_run=true"
LIMITS = [
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
]

# The study's table: model, optimizer, lr, momentum, epochs, batch, norm
STUDY = {
    "study_cnn_stage1": ("cnn", "Adam", 0.01, None, 20, 1024, False),
    "study_cnn_stage2": ("cnn", "Adam", 0.001, None, 40, 1024, False),
    "study_resnet50": ("resnet50", "SGD", 0.001, 0.9, 20, 512, False),
    "study_proxyless_raw": ("proxyless", "SGD", 0.001, 0.9, 20, 512, False),
    "study_proxyless_norm": ("proxyless", "SGD", 0.001, 0.9, 20, 128, True),
}


def _experiment_cfg(name: str, tmp_path: Path, extra: list[str] | None = None):
    return compose_cfg([f"experiment={name}", *(extra or [])], tmp_path)


@pytest.fixture(scope="session")
def imagenet_weights(tmp_path_factory):
    """model name -> a weights file shaped like the ImageNet release (1000-class head), written
    once per session: torchvision's plain state_dict for resnet50, the official
    `{"state_dict": ...}` checkpoint layout for proxyless."""
    folder = tmp_path_factory.mktemp("imagenet_weights")
    files: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in files:
            state = create_model(model, num_classes=1000).state_dict()
            payload = {"state_dict": state} if model == "proxyless" else state
            files[model] = folder / f"{model}_imagenet_like.pth"
            torch.save(payload, files[model])
        return files[model]

    return get


def _data_overrides(name: str, shared: Path | None) -> list[str]:
    if name.startswith("chest_") and shared is not None:
        # The real binary task: grayscale X-rays, NORMAL vs PNEUMONIA, class-weighted loss
        return [f"data.root={shared / 'chest_xray-sample'}", "data.image_size=64"]
    return ["data=synthetic", *TINY]


def _shared_or_none() -> Path | None:
    from conftest import shared_data_dir

    return shared_data_dir()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_file_is_global_documented_and_named(name, tmp_path):
    path = Path(CONF_DIR, "experiment", f"{name}.yaml")
    text = path.read_text()
    assert text.splitlines()[0] == "# @package _global_", path
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 4, f"{path} needs comments saying what it runs and why"
    assert "python -m fruitnet.train experiment=" in text, "usage line missing"
    defaults = yaml.safe_load(text)["defaults"]
    assert any("override /model" in str(d) for d in defaults) or any(
        isinstance(d, str) and d in EXPERIMENTS for d in defaults
    )
    cfg = _experiment_cfg(name, tmp_path)
    assert cfg.task_name != "train" and list(cfg.tags)
    assert cfg.hydra.runtime.choices.experiment == name


@pytest.mark.parametrize("name", sorted(STUDY))
def test_study_experiments_hold_the_study_settings(name, tmp_path):
    model, optimizer, lr, momentum, epochs, batch, norm = STUDY[name]
    cfg = _experiment_cfg(name, tmp_path)
    assert cfg.model.name == model
    assert cfg.optimizer._target_ == f"torch.optim.{optimizer}"
    assert cfg.optimizer.lr == lr
    if momentum is not None:
        assert cfg.optimizer.momentum == momentum and cfg.optimizer.nesterov is False
    assert cfg.trainer.max_epochs == epochs
    assert cfg.data.batch_size == batch
    assert cfg.norm is norm and cfg.data.norm is norm
    assert cfg.hydra.runtime.choices.data == "fruits"
    assert cfg.hydra.runtime.choices.scheduler == "none"  # the study's constant lr
    assert cfg.model.pretrained is (model != "cnn")
    assert cfg.data.augment == "none"


def test_stage2_defaults_to_resuming_stage1(tmp_path):
    for stage1, stage2 in [("study_cnn_stage1", "study_cnn_stage2"),
                           ("chest_cnn_stage1", "chest_cnn_stage2")]:  # fmt: skip
        one, two = _experiment_cfg(stage1, tmp_path), _experiment_cfg(stage2, tmp_path)
        # Same task -> same runs folder, which is where ckpt_path=last looks
        assert one.task_name == two.task_name
        assert one.ckpt_path is None and two.ckpt_path == "last"


@pytest.mark.parametrize("name", ["best_cnn", "best_resnet50", "best_proxyless"])
def test_best_recipes_change_what_they_say(name, tmp_path):
    cfg = _experiment_cfg(name, tmp_path)
    assert cfg.data.augment == "basic"
    assert cfg.model.label_smoothing == 0.1
    assert cfg.trainer.precision == "auto"
    assert cfg.hydra.runtime.choices.scheduler in ("cosine", "onecycle")
    target = cfg.optimizer._target_
    assert target == "torch.optim.AdamW" or (target == "torch.optim.SGD" and cfg.optimizer.nesterov)


def test_experiment_data_group_can_be_overridden_on_the_command_line(tmp_path):
    # Tests and users swap the data set under an experiment: `experiment=X data=synthetic`
    cfg = _experiment_cfg("study_resnet50", tmp_path, ["data=synthetic"])
    assert cfg.hydra.runtime.choices.data == "synthetic"
    assert cfg.data._target_ == "fruitnet.data.SyntheticDataModule"
    assert cfg.data.batch_size == 512  # the experiment's own value still applies


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_SET else pytest.param(n, marks=pytest.mark.slow) for n in SINGLE],
)
def test_experiment_trains_with_fast_dev_run(name, tmp_path, tiny_data, imagenet_weights):
    cfg = _experiment_cfg(name, tmp_path)
    model = cfg.model.name
    overrides = [
        f"experiment={name}",
        *_data_overrides(name, _shared_or_none()),
        "data.batch_size=4",
        FAST_DEV,
    ]
    if cfg.model.pretrained:
        overrides.append(f"model.weights={imagenet_weights(model)}")
    results = train(overrides, tmp_path, tiny_data)
    assert results["model"] == model
    assert results["experiment"] == name
    assert results["norm"] is cfg.norm
    assert results["lr"] == cfg.optimizer.lr
    assert results["batch_size"] == 4
    if cfg.norm:
        assert results["input_size"] == 224
    assert 0.0 <= read_results(tmp_path)["test_acc"] <= 1.0
    if results["task"] == "binary":
        assert {"test_recall", "test_specificity", "test_auroc"} <= results.keys()


@pytest.mark.parametrize(
    "stage1",
    ["study_cnn_stage1", pytest.param("chest_cnn_stage1", marks=pytest.mark.slow)],
)
def test_stage2_experiment_resumes_stage1_with_the_lower_lr(stage1, tmp_path, tiny_data):
    stage2 = stage1.replace("stage1", "stage2")
    runs = tmp_path / "runs"  # helpers put each run dir here; ckpt_path=last searches runs/*
    small = ["data=synthetic", *TINY, "data.batch_size=8", *LIMITS]
    one = train([f"experiment={stage1}", *small, "trainer.max_epochs=1"], runs / "s1", tiny_data)
    assert one["lr"] == 0.01 and one["epochs"] == 1
    two = train([f"experiment={stage2}", *small, "trainer.max_epochs=2"], runs / "s2", tiny_data)
    assert two["resumed_from"] == str(runs / "s1" / "checkpoints" / "last.ckpt")
    assert two["epochs"] == 2 and two["lr"] == 0.001
    last = runs / "s2" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.001)


def _optuna_available() -> bool:
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _optuna_available(),
    reason="hydra-optuna-sweeper not installed (pip install 'fruitnet[sweep]')",
)
def test_optuna_sweep_survives_a_failing_trial(tmp_path, tiny_data):
    """Two trials; trial #0 points model.weights at a file that does not exist, so it fails.
    The sweep must record it as failed, run trial #1, and report trial #1 as the best."""
    weights = tmp_path / "weights"
    weights.mkdir()
    # Only w1.pt exists; `${hydra:job.num}` picks the file per trial (0 -> missing, 1 -> there)
    torch.save(create_model("cnn", num_classes=3, input_size=32).state_dict(), weights / "w1.pt")
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m", "fruitnet.train", "hparams_search=optuna",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=7",
        "data=synthetic", *TINY, "data.batch_size=8", "trainer=cpu",
        "trainer.max_epochs=1", *LIMITS,
        f"model.weights={weights}/w${{hydra:job.num}}.pt",
        "callbacks.model_size.latency=false", "callbacks.progress_bar=null",
        "callbacks.model_summary=null", "data.num_workers=0",
        f"paths.data_dir={tiny_data}", f"hydra.sweep.dir={sweep}",
        env={"FRUITNET_OFFLINE": "1"},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Failed experiment" in out and "weights file not found" in out
    assert not (sweep / "0" / "results.json").exists()
    done = json.loads((sweep / "1" / "results.json").read_text())
    assert done["val_acc"] is not None
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    assert best["best_value"] == pytest.approx(done["val_acc"])
    # data.batch_size was fixed on the command line, which takes it out of the search space
    assert set(best["best_params"]) == {
        "optimizer.lr", "optimizer.weight_decay", "model.label_smoothing",
    }  # fmt: skip
