"""bench/chest_views.py: a chest run's checkpoint rescored under test-time views, each view's cut
chosen on the run's own validation split."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from helpers import FAST, REPO, compose_cfg, jpeg_folders
from omegaconf import OmegaConf

sys.path.insert(0, str(REPO / "bench"))
views = importlib.import_module("chest_views")
CLASSES = importlib.import_module("benchlib.chest_films").CLASSES


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory):
    """A chest look-alike and one threshold=auto run on it, laid out as a Hydra run folder
    (.hydra/config.yaml, checkpoints/epoch_*.ckpt)."""
    from fruitnet.train import run

    tmp = tmp_path_factory.mktemp("chest_views")
    counts = {f"{s}/{c}": n for s, n in (("train", 30), ("test", 6)) for c in CLASSES}
    data = jpeg_folders(tmp / "chest", counts)
    run_dir = tmp / "runs" / "best_chest_seed0"
    overrides = [
        "data=folder", f"data.root={data}", "data.image_size=32", "data.batch_size=8",
        "data.val_fraction=0.3", "model.threshold=auto", "trainer.max_epochs=2", "trainer.precision=32-true",
    ]  # fmt: skip
    cfg = compose_cfg(FAST + overrides, run_dir)
    results = run(cfg)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save({k: v for k, v in cfg.items() if k != "hydra"}, run_dir / ".hydra/config.yaml")
    return run_dir, results


def test_as_trained_reproduces_the_run_and_every_view_is_scored(chest_run):
    run_dir, results = chest_run
    assert results["threshold"] is not None  # a cut chosen on a validation split of both classes
    scores = views.score_run(run_dir)
    assert set(scores) == set(views.VIEWS)
    # The cut chosen again on the same validation films, in the same precision: the run's own test
    assert scores["as trained"]["acc"] == pytest.approx(100 * results["test_acc"], abs=1e-4)
    for s in scores.values():
        assert 0 <= s["acc"] <= 100 and 0 <= s["auroc"] <= 1


def test_zoom_keeps_the_centre_and_five_crops_the_corners():
    x = torch.zeros(1, 3, 20, 20)
    x[..., 5:15, 5:15] = 1.0  # a bright centre square, half the side
    (same,) = views.centre_zoom(1.0)(x)
    assert torch.equal(same, x)
    (zoomed,) = views.centre_zoom(0.5)(x)
    assert zoomed.shape == x.shape and zoomed.min() > 0.99  # only the centre square is left
    crops = views.five_crops(0.5)(x)
    assert len(crops) == 5 and all(c.shape == x.shape for c in crops)
    # torchvision's order: four corners (a quarter of each lies in the square), then the centre
    assert [round(c.mean().item(), 2) for c in crops] == [0.25] * 4 + [1.0]


def test_render_counts_seeds_against_as_trained():
    def seed(acc_as_trained, acc_view):
        row = {"acc": acc_as_trained, "spec": 50.0, "auroc": 0.5}
        return {name: dict(row, acc=acc_view) for name in views.VIEWS} | {"as trained": row}

    text = views.render({"held-out films": [seed(80, 85), seed(80, 80), seed(80, 70)]}, "cmd", "m")
    row = next(line for line in text.splitlines() if line.startswith("| centre zoom 0.9 |"))
    assert row.endswith("| 1 up, 1 level |")
    assert "78.3 ± 7.6" in row  # mean ± sample std of 85, 80, 70
