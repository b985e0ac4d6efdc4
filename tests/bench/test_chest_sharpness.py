"""bench/chest_sharpness.py: how sharp each split's films are, the bench's chest checkpoints on
smoothed and sharpened test films, and their twins retrained with data.sharpness."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import yaml
from helpers import REPO, jpeg_folders, train

sys.path.insert(0, str(REPO / "bench"))
sharp = importlib.import_module("chest_sharpness")
CLASSES = importlib.import_module("benchlib.chest_films").CLASSES

RECIPE = ["data=folder", "data.image_size=32", "data.batch_size=8", "data.augment=crop_erase",
          "model=cnn", "trainer.max_epochs=1", "trainer.precision=32-true", "seed=0"]  # fmt: skip


def trained(run, data, tmp, extra=()):
    """One retrain laid out as bench/search.py leaves it, with Hydra's record of its overrides."""
    overrides = [*RECIPE, f"data.root={data}", *extra]
    results = train(overrides, run, tmp)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return results


@pytest.fixture(scope="module")
def chest_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chest_sharp")
    counts = {f"{s}/{c}": n for s, n in (("train", 24), ("test", 6)) for c in CLASSES}
    data = jpeg_folders(tmp / "chest_xray-small", counts)
    bench = trained(tmp / "work" / "chest_train_basic_cnn_seed0", data, tmp)
    trained(tmp / "again" / "chest_train_basic_cnn_seed0", data, tmp, ["data.sharpness=1.0"])
    return tmp, data, bench


def test_report_of_a_bench_folder_and_its_retrained_twins(chest_runs, tmp_path):
    tmp, data, bench = chest_runs
    out = tmp_path / "CHEST_SHARPNESS.md"
    argv = ["--work", str(tmp / "work"), "--retrained", str(tmp / "again"), "--data", str(data)]
    assert sharp.main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert "| train | NORMAL | 24 |" in text and "| test | PNEUMONIA | 6 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| basic_cnn |")]
    assert len(rows) == 2  # the bench's row, the retrained row
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "1" and len(cells) == 2 + len(sharp.FACTORS)
    # Factor 1 is the films as they are: the training run's own test accuracy
    assert cells[2 + sharp.FACTORS.index(1.0)].startswith(f"{100 * bench['test_acc']:.1f} ± 0.0")
    assert rows[1].split("|")[2].strip() == "1.0"  # the twin's data.sharpness, from its config
    assert "raises the specificity of" in text and "accuracy up for" in text


def test_a_twin_with_another_recipe_is_refused(chest_runs, tmp_path):
    tmp, data, _ = chest_runs
    twin = tmp_path / "chest_train_basic_cnn_seed0"
    (twin / ".hydra").mkdir(parents=True)
    other = [*RECIPE[:-1], "seed=1", f"data.root={data}", "data.sharpness=1.0"]
    (twin / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(SystemExit, match=r"not .* recipe plus data.sharpness: .*seed"):
        sharp.check_twin(tmp / "work" / "chest_train_basic_cnn_seed0", twin)


def test_roughness_reads_the_vertical_steps_of_the_grey_levels():
    flat = torch.full((1, 3, 8, 8), 90, dtype=torch.uint8)
    stripes = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    stripes[..., ::2, :] = 255
    assert sharp.roughness(torch.cat([flat, stripes])).tolist() == pytest.approx(
        [0.0, 1.0], abs=0.01
    )
