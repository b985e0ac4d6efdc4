"""bench/chest_target_val.py: validation films taken from the test split, never scored."""

from __future__ import annotations

import importlib
import sys

from helpers import REPO, jpeg_folders

sys.path.insert(0, str(REPO / "bench"))
tv = importlib.import_module("chest_target_val")
CLASSES = importlib.import_module("benchlib.chest_films").CLASSES


def test_the_copy_takes_every_sixth_test_film_for_validation_and_scores_the_rest(tmp_path):
    counts = {f"{s}/{c}": n for s, n in (("train", 9), ("test", 12), ("val", 2)) for c in CLASSES}
    source = jpeg_folders(tmp_path / "chest", counts)
    out = tmp_path / "copy"
    assert tv.build_copy(source, out) == {"train": 18, "val": 4, "test": 20}
    assert tv.build_copy(source, out) == {"train": 18, "val": 4, "test": 20}  # again: no error
    for name in CLASSES:
        val = {p.name for p in (out / "val" / name).iterdir()}
        test = {p.name for p in (out / "test" / name).iterdir()}
        assert not val & test and len(val | test) == 12
        # sorted by name, the 1st and 7th films (every 6th), all links into the test split
        assert val == set(sorted(p.name for p in (source / "test" / name).iterdir())[::6])
        assert {p.resolve().parent for p in (out / "val" / name).iterdir()} == {
            (source / "test" / name).resolve()
        }
        # Kaggle's val films (training source) are left out
        assert {p.resolve().parent for p in (out / "train" / name).iterdir()} == {
            (source / "train" / name).resolve()
        }


def test_render_has_a_row_per_arm_with_its_cuts():
    def run(acc: float, cut: float, epochs: int) -> dict:
        return {
            "test_acc": acc, "test_specificity": acc, "test_recall": acc, "test_auroc": 0.9,
            "threshold": cut, "epochs": epochs,
        }  # fmt: skip

    rows = {"carved": [run(0.7, 0.5, 100), run(0.8, 0.45, 98)], "given": [run(0.9, 0.7, 90)]}
    text = tv.render(rows, {"train": 300, "val": 20, "test": 100}, "cmd", "a CPU")
    assert (
        "| carved | 2 | 75.0 ± 7.1 | 75.0 ± 7.1 | 75.0 ± 7.1 | 0.900 ± 0.000 | 98-100 | 0.50/0.45 |"
        in text
    )
    assert "| given | 1 | 90.0 ± 0.0 |" in text and "| 90-90 | 0.70 |" in text
    assert "20 validation films taken from the test split, scored on the other 100" in text
