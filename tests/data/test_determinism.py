"""`seed=N trainer.deterministic=true`: two runs on the CPU give the same results.json metrics and
the same weights, at the default precision (bf16-mixed on CPUs with native bf16, else fp32) and at
32-true; another seed gives other numbers (so the comparison can fail)."""

from __future__ import annotations

import pytest
import torch
from helpers import read_results, train

from fruitnet.checkpoints import load_checkpoint

TINY = [
    "data.num_classes=3",
    "data.image_size=32",
    "data.train_per_class=30",
    "data.test_per_class=8",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
]
METRICS = [
    "test_acc",
    "test_loss",
    "test_f1_macro",
    "val_acc",
    "per_class_acc",
    "confusion_matrix",
    "global_step",
    "epochs",
    "num_classes",
    "class_names",
]


def _run(tmp_path, data_dir, name: str, *extra: str) -> tuple[dict, dict[str, torch.Tensor]]:
    run_dir = tmp_path / name
    train([*TINY, *extra], run_dir, data_dir)
    results = read_results(run_dir)  # what is on disk, not just what run() returned
    assert results["best_ckpt"], results
    return {k: results[k] for k in METRICS}, load_checkpoint(results["best_ckpt"])["state_dict"]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, data_dir):
    """seed=7 twice and seed=8 once, at the default precision (bf16-mixed where fast, else fp32)."""
    base = tmp_path_factory.mktemp("determinism")
    return [
        _run(base, data_dir, name, f"seed={seed}") for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]


def test_same_seed_same_results(three_runs):
    (first, w_first), (second, w_second), _ = three_runs
    assert first == second
    assert _same_weights(w_first, w_second)
    assert first["global_step"] > 0 and first["test_acc"] is not None


def test_another_seed_gives_other_results(three_runs):
    (first, w_first), _, (other, w_other) = three_runs
    assert not _same_weights(w_first, w_other)
    assert first["test_loss"] != other["test_loss"]


@pytest.mark.slow
def test_same_seed_same_results_in_fp32(tmp_path, data_dir):
    first, w_first = _run(tmp_path, data_dir, "a", "seed=7", "trainer.precision=32-true")
    second, w_second = _run(tmp_path, data_dir, "b", "seed=7", "trainer.precision=32-true")
    assert first == second
    assert _same_weights(w_first, w_second)


@pytest.mark.parametrize(
    "data", [["data.cache=false"], ["data.cache=true"], ["data.on_device=true"]]
)
def test_cache_and_on_device_train_the_same_weights(three_runs, tmp_path, data_dir, data):
    """The data path changes speed only: same seed, same batches, same weights and metrics.
    The reference runs use the default data.cache=auto (on for this small set), so the
    cache=false case is "auto vs off"."""
    reference, w_reference = three_runs[0]
    results, weights = _run(tmp_path, data_dir, "x", "seed=7", *data)
    assert results == reference
    assert _same_weights(weights, w_reference)
