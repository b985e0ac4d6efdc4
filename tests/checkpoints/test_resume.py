"""Resuming and re-initialising runs: `ckpt_path=FILE|last`, a changed lr, `init_from=FILE`.

Lightning restores the optimizer state on resume, lr included; fruitnet makes the configured
`optimizer.lr` win (ClassifierModule._apply_configured_lr) and logs a warning when it changes
it. The lr actually used is read back three ways: the resumed run's checkpoint, the CSV log's
`lr-Adam` column (LearningRateMonitor, logged at each epoch start) and the log message.

Tiny synthetic data (3 classes, 32 px) keeps each epoch to a second or two.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_DATA, read_results, train

from fruitnet.checkpoints import CheckpointError

BASE = [
    "data=synthetic",
    *(f"data.{k}={v}" for k, v in TINY_DATA.items()),
    "data.batch_size=8",
    "optimizer=adam",
    "scheduler=none",
]
LR_WARNING = "using the configured optimizer.lr"


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_data) -> dict:
    """One epoch at lr 0.01: the run every test below resumes or starts from."""
    run = tmp_path_factory.mktemp("first")
    results = train([*BASE, "optimizer.lr=0.01", "trainer.max_epochs=1"], run, tiny_data)
    assert results["epochs"] == 1 and results["global_step"] > 0
    return {**results, "last": run / "checkpoints" / "last.ckpt"}


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _ckpt_lr(path: Path) -> float:
    return _ckpt(path)["optimizer_states"][0]["param_groups"][0]["lr"]


def _csv_lrs(run_dir: Path) -> dict[int, float]:
    """epoch -> lr logged by LearningRateMonitor at that epoch's start. Its rows carry no epoch
    number, so each lr row is given the epoch of the next row that has one."""
    lrs: dict[int, float] = {}
    pending: list[float] = []
    with (run_dir / "csv" / "metrics.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("lr-Adam"):
                pending.append(float(row["lr-Adam"]))
            if row.get("epoch") and pending:
                lrs[int(float(row["epoch"]))] = pending[-1]
                pending = []
    return lrs


def _lr_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if LR_WARNING in r.getMessage()]


def test_resume_with_a_lower_lr_trains_with_it_and_says_so(first, tmp_path, tiny_data, caplog):
    assert _ckpt_lr(first["last"]) == pytest.approx(0.01)
    with caplog.at_level(logging.WARNING):
        results = train(
            [*BASE, "optimizer.lr=0.001", "trainer.max_epochs=2", f"ckpt_path={first['last']}"],
            tmp_path,
            tiny_data,
        )
    assert results["resumed_from"] == str(first["last"])
    assert results["epochs"] == 2 and results["global_step"] == 2 * first["global_step"]
    assert _ckpt_lr(tmp_path / "checkpoints" / "last.ckpt") == pytest.approx(0.001)
    # The resumed run logged epoch 1 only, at the new lr
    assert _csv_lrs(tmp_path) == {1: pytest.approx(0.001)}
    messages = _lr_warnings(caplog)
    assert len(messages) == 1, caplog.text
    assert "0.01" in messages[0] and "optimizer.lr=0.001" in messages[0]


def test_plain_resume_keeps_the_lr_and_stays_quiet(first, tmp_path, tiny_data, caplog):
    with caplog.at_level(logging.WARNING):
        results = train(
            [*BASE, "optimizer.lr=0.01", "trainer.max_epochs=2", f"ckpt_path={first['last']}"],
            tmp_path,
            tiny_data,
        )
    assert results["epochs"] == 2
    assert _ckpt_lr(tmp_path / "checkpoints" / "last.ckpt") == pytest.approx(0.01)
    assert _csv_lrs(tmp_path) == {1: pytest.approx(0.01)}
    assert _lr_warnings(caplog) == []


def test_init_from_loads_the_weights_only(first, tmp_path, tiny_data, caplog):
    # Test only: the checkpoint's weights give exactly the first run's test accuracy.
    tested = train([*BASE, f"init_from={first['last']}", "train=false"], tmp_path / "t", tiny_data)
    assert tested["test_acc"] == pytest.approx(first["test_acc"])
    assert tested["test_loss"] == pytest.approx(first["test_loss"], rel=1e-4)

    # Training: epoch 0 again, with a fresh optimizer at the configured lr.
    run = tmp_path / "trained"
    with caplog.at_level(logging.WARNING):
        results = train(
            [*BASE, f"init_from={first['last']}", "optimizer.lr=0.001", "trainer.max_epochs=1"],
            run,
            tiny_data,
        )
    assert results["resumed_from"] is None
    # A resume would have found max_epochs=1 already reached and trained nothing.
    assert results["epochs"] == 1 and results["global_step"] == first["global_step"]
    new, old = _ckpt(run / "checkpoints" / "last.ckpt"), _ckpt(first["last"])
    assert new["epoch"] == 0
    steps = new["optimizer_states"][0]["state"][0]["step"]
    assert int(steps) == first["global_step"], "optimizer state was carried over"
    assert new["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.001)
    changed = [
        k for k in old["state_dict"] if not torch.equal(new["state_dict"][k], old["state_dict"][k])
    ]
    assert changed, "training from init_from did not move the weights"
    assert _lr_warnings(caplog) == []


def test_ckpt_path_last_resumes_an_earlier_run_then_its_own(first, tmp_path, tiny_data):
    runs = tmp_path / "runs"  # the runs folder of one task: logs/<task>/runs/
    earlier = runs / "earlier" / "checkpoints"
    earlier.mkdir(parents=True)
    shutil.copy2(first["last"], earlier / "last.ckpt")

    # A new run dir has no checkpoint of its own: `last` takes the newest earlier run's.
    later = runs / "later"
    results = train([*BASE, "ckpt_path=last", "trainer.max_epochs=2"], later, tiny_data)
    assert results["resumed_from"] == str(earlier / "last.ckpt")
    assert results["epochs"] == 2

    # Run again in the same dir (as after a crash): its own newest checkpoint wins.
    again = train([*BASE, "ckpt_path=last", "trainer.max_epochs=3"], later, tiny_data)
    own = Path(again["resumed_from"])
    assert own.parent == later / "checkpoints"
    assert again["epochs"] == 3 and read_results(later)["epochs"] == 3


def test_ckpt_path_last_without_any_checkpoint_says_where_it_looked(tmp_path, tiny_data):
    with pytest.raises(CheckpointError, match="ckpt_path=last: no checkpoint"):
        train([*BASE, "ckpt_path=last", "trainer.max_epochs=1"], tmp_path / "runs" / "a", tiny_data)


@pytest.mark.slow
def test_study_cnn_two_stage_chain_on_the_fruits_sample(shared_data, tmp_path, caplog):
    """experiment=study_cnn_stage1, then experiment=study_cnn_stage2 (ckpt_path=last) on the real
    Fruits-360 sample (95 classes), with 1 + 1 epochs and batch 64 instead of 20 + 20 and 1024."""
    root = shared_data / "fruits-360-sample"
    data = [f"data.root={root}", "data.batch_size=64"]
    runs = tmp_path / "study_cnn" / "runs"
    one = train(["experiment=study_cnn_stage1", *data, "trainer.max_epochs=1"], runs / "s1")
    assert one["num_classes"] == 95 and one["lr"] == 0.01 and one["epochs"] == 1
    assert _ckpt_lr(runs / "s1" / "checkpoints" / "last.ckpt") == pytest.approx(0.01)

    with caplog.at_level(logging.WARNING):
        two = train(["experiment=study_cnn_stage2", *data, "trainer.max_epochs=2"], runs / "s2")
    assert two["resumed_from"] == str(runs / "s1" / "checkpoints" / "last.ckpt")
    assert two["epochs"] == 2 and two["lr"] == 0.001
    assert _ckpt_lr(runs / "s2" / "checkpoints" / "last.ckpt") == pytest.approx(0.001)
    assert _csv_lrs(runs / "s2") == {1: pytest.approx(0.001)}
    assert len(_lr_warnings(caplog)) == 1
    assert read_results(runs / "s2")["test_acc"] is not None
