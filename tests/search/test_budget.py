"""A search under trainer.max_time: the warm-up and the architecture phase laid over the budget,
and a run in which no architecture step ran presented as what it is, never as a searched arch.
Also: the held-out split the architecture steps read is never augmented."""

from __future__ import annotations

import logging

import pytest
from helpers import TRAINED_DATA, compose_cfg, read_results

# A space small enough that a step is a few ms, so the Pace sleep sets the step time.
TINY = [
    *TRAINED_DATA, "data.batch_size=8", "data.num_workers=0", "trainer=cpu",
    "search.widths=[8,16]", "search.depths=[2,1]", "search.strides=[2,2]",
    "search.first_conv=8", "search.first_block=8", "search.feature_mix=32",
    "search.latency_repeats=2", "search.latency_warmup=1", "search.latency_rounds=1",
    "search.latency_calibrate=false", "search.runtime=torch",
    "search.latency_loss=add", "search.target_latency_ms=1000", "search.arch_every=1",
    "callbacks.progress_bar=null", "callbacks.model_summary=null", "~logger",
    "callbacks.lr_monitor=null", "trainer.limit_val_batches=1",
    "+callbacks.pace._target_=helpers.Pace",
]  # fmt: skip


def _search(overrides, run_dir, data_dir, caplog):
    from fruitnet.search.__main__ import run as run_search

    cfg = compose_cfg([*TINY, *overrides], run_dir, data_dir, config_name="search")
    with caplog.at_level(logging.INFO, logger="fruitnet.search"):
        return run_search(cfg)


def test_a_search_capped_inside_the_warmup_writes_no_arch(tmp_path, data_dir, caplog):
    """The cap (2 s) ends after the first step (which sleeps 2.5 s), inside the warm-up (90 %
    of the cap, so loading the first batch cannot reach it): no
    architecture step ran, so no arch.json, no "searched arch" line; the log and results.json
    say what ran and what to change."""
    run_dir = tmp_path / "capped"
    results = _search(
        [
            "+callbacks.pace.seconds=2.5",
            "trainer.max_time=00:00:00:02",
            "trainer.max_epochs=100",
            "trainer.limit_train_batches=4",
            "search.warmup_fraction=0.9",
        ],
        run_dir,
        data_dir,
        caplog,
    )
    assert results["searched"] is False and results["arch_steps"] == 0
    assert results["weight_steps"] >= 1 and results["time_budget_s"] == pytest.approx(2.0)
    assert read_results(run_dir)["searched"] is False
    assert not list(run_dir.glob("arch*.json"))
    text = caplog.text
    assert "searched arch" not in text and "no architecture was searched" in text
    assert "trainer.max_time" in results["what_to_change"]
    assert "nothing searched" in (run_dir / "search_report.md").read_text()


def test_warmup_only_without_a_cap_writes_no_arch(tmp_path, data_dir, caplog):
    run_dir = tmp_path / "warm"
    results = _search(
        [
            "+callbacks.pace.seconds=0",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "search.warmup_epochs=1",
        ],
        run_dir,
        data_dir,
        caplog,
    )
    assert results["searched"] is False and results["weight_steps"] == 2
    assert "trainer.max_epochs" in results["what_to_change"]
    assert not list(run_dir.glob("arch*.json"))


def test_a_capped_search_makes_arch_steps_in_proportion_to_its_budget(tmp_path, data_dir, caplog):
    """Epochs would keep it in the warm-up forever (search.warmup_epochs=1000); the cap's share
    ends it: with warmup_fraction 0.5 of a 6 s cap at 0.1 s (sleep) + the step's own time a step,
    about half the weight steps come after the warm-up, each followed by one architecture step
    (arch_every=1). Measured on the 2-core test box: 16 weight and 9 architecture steps in 4 s."""
    run_dir = tmp_path / "prop"
    results = _search(
        [
            "+callbacks.pace.seconds=0.1",
            "trainer.max_time=00:00:00:06",
            "trainer.max_epochs=1000",
            "trainer.limit_train_batches=100",
            "search.warmup_epochs=1000",
            "search.warmup_fraction=0.5",
        ],
        run_dir,
        data_dir,
        caplog,
    )
    assert results["searched"] is True
    weight, arch = results["weight_steps"], results["arch_steps"]
    end = results["warmup_end"]
    # Every weight step from the one that ended the warm-up on made one architecture step
    assert arch == weight - end["weight_steps"] + 1
    # The warm-up ended at half the budget, to within a step, or an epoch's end (validation and
    # last.ckpt, up to ~1 s here) when the half falls there
    assert end["budget_s"] == pytest.approx(6.0, abs=0.01)
    assert 0.5 * 6.0 <= end["train_s"] <= 0.5 * 6.0 + 1.5
    # ... so the architecture phase had about half the steps (the steps' pace varies a little)
    assert weight >= 8 and 0.3 <= arch / weight <= 0.7, (arch, weight)
    assert (run_dir / "arch.json").is_file()


def test_only_the_weight_steps_batches_are_augmented(tmp_path, data_dir, caplog, monkeypatch):
    """With data.augment set, the training batches of the weight steps are augmented and the
    held-out batches (architecture steps, each target's choice) never are: moved through the
    trainer during fit, they used to take the training augmentation."""
    from fruitnet.data.transforms import BatchTransform

    calls: list[bool] = []
    forward = BatchTransform.forward

    def spy(self, x, train=False):
        calls.append(bool(train))
        return forward(self, x, train=train)

    monkeypatch.setattr(BatchTransform, "forward", spy)
    results = _search(
        [
            "data.augment=crop_erase",
            "+callbacks.pace.seconds=0",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "search.warmup_epochs=0",
        ],
        tmp_path / "aug",
        data_dir,
        caplog,
    )
    assert results["weight_steps"] == 3 and results["arch_steps"] == 3
    assert calls.count(True) == results["weight_steps"]
    assert calls.count(False) >= results["arch_steps"]
