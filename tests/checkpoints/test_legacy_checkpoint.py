"""A checkpoint written before the redesign of issue 26 still evaluates, predicts and resumes.

`fixtures/legacy_cnn.ckpt` was written once by fruitnet at commit ec4f7f7 with
`fixtures/make_legacy_checkpoint.py` (3 synthetic classes, 16 px, basic CNN, SGD, one epoch); these
tests load that file with today's code. The synthetic set below is the one it was trained on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import compose_cfg, train

from fruitnet.callbacks import ResumableCheckpoint
from fruitnet.checkpoints import load_checkpoint, load_classifier
from fruitnet.data import SyntheticDataModule
from fruitnet.eval import run as run_eval
from fruitnet.predict import Predictor

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_cnn.ckpt"
CLASSES = ["Synthetic Apple Red", "Synthetic Banana Yellow", "Synthetic Orange"]
SYNTHETIC = [
    "data=synthetic", "data.num_classes=3", "data.image_size=16", "data.train_per_class=10",
    "data.test_per_class=4", "data.batch_size=8", "data.cache=false", "data.num_workers=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def legacy() -> dict:
    return load_checkpoint(LEGACY)


def test_the_key_layout_the_old_code_wrote(legacy):
    """What today's loaders rely on, as the pre-redesign code laid it out."""
    assert {"state_dict", "hyper_parameters", "optimizer_states", "loops", "callbacks"} <= set(
        legacy
    )
    hp = legacy["hyper_parameters"]
    assert hp["model_name"] == "cnn" and hp["num_classes"] == 3 and hp["input_size"] == 16
    assert hp["class_names"] == CLASSES
    assert hp["preprocess"] == {
        "resize": 16, "crop": None, "size": 16, "mean": [0.0] * 3, "std": [1.0] * 3,
    }  # fmt: skip
    assert hp["optimizer"]["_target_"] == "torch.optim.SGD"
    assert sorted(k.split(".")[1] for k in legacy["state_dict"] if k.endswith("weight")) == [
        "classifier", "classifier", "features", "features", "features", "features",
    ]  # fmt: skip
    assert legacy["epoch"] == 0 and legacy["global_step"] == 3


def test_the_checkpoint_callback_finds_its_old_state(legacy, tmp_path):
    """The resume state is filed under the callback's state key; renaming the class
    (ModelCheckpoint -> ResumableCheckpoint) must not orphan it."""
    callback = ResumableCheckpoint(
        dirpath=tmp_path, monitor="val/acc", mode="max", save_last=True, save_top_k=1
    )
    assert callback.state_key in legacy["callbacks"]
    assert "RNGStateCheckpoint" in legacy["callbacks"]


def test_it_evaluates(tmp_path, data_dir):
    overrides = [f"ckpt_path={LEGACY}", *SYNTHETIC, "trainer=cpu", "verbose=false"]
    overrides.append("explain=false")
    results = run_eval(compose_cfg(overrides, tmp_path, data_dir, config_name="eval"))
    assert results["class_names"] == CLASSES and results["model"] == "cnn"
    assert results["num_test"] == 12 and 0.0 <= results["test_acc"] <= 1.0
    assert results["kind"] == "eval"
    assert results["trained"]["ckpt_epochs"] == 1 and results["trained"]["ckpt_global_step"] == 3
    assert sum(map(sum, results["confusion_matrix"])) == 12
    assert (tmp_path / "results.json").is_file() and (tmp_path / "per_class.csv").is_file()


def test_it_predicts(data_dir):
    dm = SyntheticDataModule(
        root=data_dir / "synthetic", num_classes=3, image_size=16, train_per_class=10,
        test_per_class=4, num_workers=0, cache=False,
    )  # fmt: skip
    dm.setup("test")
    rows = Predictor(load_classifier(LEGACY)).predict(dm.test_set.paths, topk=3, strict=True)
    assert len(rows) == 12
    for row in rows:
        assert sorted(name for name, _ in row["topk"]) == CLASSES
        assert abs(sum(p for _, p in row["topk"]) - 1.0) < 1e-4


def test_it_resumes(tmp_path, data_dir):
    ckpt = tmp_path / "legacy.ckpt"
    shutil.copyfile(LEGACY, ckpt)
    overrides = [*SYNTHETIC, "optimizer=sgd", "optimizer.lr=0.01", "seed=7"]
    # Lightning says this only when it found the old checkpoint callback's state under its key.
    with pytest.warns(UserWarning, match="dirpath has changed"):
        results = train(
            [*overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt}"], tmp_path / "run", data_dir
        )
    assert results["resumed_from"] == str(ckpt)
    # One more epoch of 3 steps on top of the checkpoint's epoch and 3 steps.
    assert results["epochs"] == 2 and results["global_step"] == 6
    assert results["test_acc"] is not None
