"""bench/chest_bn_shift.py: a search bench's chest checkpoints scored as trained, with precise
BatchNorm and with test-time BatchNorm."""

from __future__ import annotations

import importlib
import sys

import pytest
from helpers import REPO, jpeg_folders, train

sys.path.insert(0, str(REPO / "bench"))
shift = importlib.import_module("chest_bn_shift")
CLASSES = importlib.import_module("benchlib.chest_films").CLASSES


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory):
    """A chest_xray-small look-alike and one BatchNorm net trained on it, laid out as
    bench/search.py leaves a retrain (<work>/chest_train_<net>_seed0/checkpoints/epoch_*.ckpt)."""
    tmp = tmp_path_factory.mktemp("chest_bn")
    counts = {f"{s}/{c}": n for s, n in (("train", 24), ("test", 6)) for c in CLASSES}
    data = jpeg_folders(tmp / "chest_xray-small", counts)
    run = tmp / "work" / "chest_train_proxylessnas-gpu_seed0"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRUITNET_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(tmp / "torch_home"))
        results = train(
            ["data=folder", f"data.root={data}", "data.image_size=32", "data.batch_size=8",
             "data.augment=crop_erase", "model=proxyless", "model.pretrained=false",
             "trainer.max_epochs=1", "trainer.precision=32-true"],
            run, tmp,
        )  # fmt: skip
    return data, run, results


def test_rows_and_summary_of_a_search_bench_folder(chest_run, tmp_path):
    data, run, results = chest_run
    out = tmp_path / "CHEST_BN_SHIFT.md"
    assert shift.main(["--work", str(run.parent), "--data", str(data), "--out", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| proxylessnas-gpu |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[1]) > 20 and cells[2] == "1"  # BatchNorm layers, seeds
    # "as trained" is the training run's own test accuracy (both fp32, its best checkpoint)
    assert cells[3].startswith(f"{100 * results['test_acc']:.1f} ± 0.0 / ")
    assert "Over the 1 BatchNorm nets" in text and "test-time BN (test films, unlabelled): " in text


def test_a_folder_without_chest_retrains_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no chest_train_<net>_seed<k> folders in"):
        shift.main(["--work", str(tmp_path), "--data", str(tmp_path)])


def test_score_counts_each_class_against_the_cut():
    import torch

    p1 = torch.tensor([0.1, 0.6, 0.4, 0.9])
    y = torch.tensor([0, 0, 1, 1])
    s = shift.score(p1, y, cut=0.5)
    assert (s["acc"], s["spec"], s["sens"]) == (50.0, 50.0, 50.0)
    assert s["p_normal"] == pytest.approx(0.35) and s["auroc"] == pytest.approx(0.75)
