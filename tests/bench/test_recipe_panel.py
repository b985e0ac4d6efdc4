"""bench/recipes.py's chest comparison (issue 27): several recipes in one table, the goal's
PASS / MISS, and `--only KEY` rewriting only that comparison's section of RECIPES.md."""

from __future__ import annotations

import importlib
import re
import sys

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))  # bench/benchlib: the code behind bench/recipes.py
plan = importlib.import_module("benchlib.recipe_plan")
panel = importlib.import_module("benchlib.recipe_panel")
recipes_md = importlib.import_module("benchlib.recipes_md")

OLD = """# Recipes

Command: `python bench/recipes.py` (`make bench-recipes`), started 2026-12-01 08:14 UTC.

## Summary: test accuracy, best_* against the study, same fit-time cap

- fruits_cnn (fruits-360-small, 75 s a run): `best_cnn` against `study`: **beats**.
- chest_cnn (chest_xray-small, 30 s a run): `best_cnn` against `chest`: within.

## fruits_cnn: fruits-360-small

fruits table, kept byte for byte | 1 |

## chest_cnn: chest_xray-small, data=folder

chest table

## History of the tuning

- a bullet of the history, not of the summary

history
"""


def _new(key: str, body: str) -> str:
    return f"""# Recipes

Command: `x`.

## Summary: test accuracy, best_* against the study, same fit-time cap

- {key} (chest_xray-small, 60 s a run): `best_chest` against `chest`: {body}.

## {key}: chest_xray-small, data=folder

{body} table

## History of the tuning

history
"""


def test_merge_adds_a_new_section_and_keeps_every_other_line():
    merged = panel.merge(OLD, _new("chest_recipe", "new"), ["chest_recipe"], "`y` (today)")
    lines = merged.splitlines()
    # Take the new section and summary line out again: the old file, but the Command line
    start = lines.index("## chest_recipe: chest_xray-small, data=folder")
    end = lines.index("## History of the tuning")
    rest = [line for line in lines[:start] + lines[end:] if not line.startswith("- chest_recipe")]
    old_lines = OLD.splitlines()
    assert [line for line in rest if not line.startswith("Command:")] == [
        line for line in old_lines if not line.startswith("Command:")
    ]
    assert lines.index("## chest_recipe: chest_xray-small, data=folder") < lines.index(
        "## History of the tuning"
    )
    assert (
        "- chest_recipe (chest_xray-small, 60 s a run): `best_chest` against `chest`: new." in lines
    )
    summary = [line for line in lines if line.startswith("- ")]
    assert summary[2].startswith("- chest_recipe (")  # right after the other summary lines
    assert lines[2].endswith("; then `y` (today).")
    # Run again: the section and its summary line are replaced, not added twice
    again = panel.merge(merged, _new("chest_recipe", "newer"), ["chest_recipe"], "`z`")
    assert again.count("## chest_recipe:") == 1 and "newer table" in again
    assert "new table" not in again and again.count("- chest_recipe (") == 1
    assert "fruits table, kept byte for byte | 1 |" in again


def test_chest_recipe_comparison_runs_six_recipes_against_a_goal():
    comp = next(c for c in plan.COMPARISONS if c.key == "chest_recipe")
    assert [r.label for _, r in comp.roles()] == [
        "chest_cnn_stage1+2",
        "best_cnn_budget",
        "best_chest input_norm=image",
        "best_chest instance_norm=2",
        "best_chest focus_penalty=0.2",
        "best_chest",
    ]
    # Each variant row is best_chest with the one override it was tried with
    roles = {r.label: r for _, r in comp.roles()}
    assert roles["best_chest input_norm=image"].overrides == ("model.kwargs.input_norm=image",)
    assert roles["best_chest instance_norm=2"].overrides == ("model.kwargs.instance_norm=2",)
    assert roles["best_chest focus_penalty=0.2"].overrides == ("model.focus_penalty=0.2",)
    assert dict(comp.goal) == {"test_acc": 0.90, "test_specificity": 0.85}
    assert comp.explain and comp.binary and comp.data == "folder"


def test_goal_verdict_needs_every_seed():
    goal = (("test_acc", 0.9), ("test_specificity", 0.85))
    good = [
        {"test_acc": 0.92, "test_specificity": 0.9},
        {"test_acc": 0.91, "test_specificity": 0.86},
    ]
    assert panel.goal_verdict("best_chest", good, goal).startswith("**PASS**")
    one_short = [*good, {"test_acc": 0.95, "test_specificity": 0.80}]
    text = panel.goal_verdict("best_chest", one_short, goal)
    assert text.startswith("**MISS**") and "specificity >= 85 %" in text and "not met" in text
    assert "not measured" in panel.goal_verdict("best_chest", [], goal)


def test_the_table_has_the_share_and_threshold_columns():
    comp = next(c for c in plan.COMPARISONS if c.key == "chest_recipe")
    run = {"seed": 0, "test_acc": 0.8, "val_acc": 0.9, "test_recall": 0.9,
           "test_specificity": 0.7, "test_auroc": 0.9, "epochs": 20, "wall_s": 70.0,
           "model": "cnn", "cam_central_share": 0.41, "threshold": 0.62}  # fmt: skip
    table = recipes_md.comparison_table(comp, {"study": [run], "other1": [run], "best": [run]})
    assert "central share" in table.splitlines()[0] and "threshold" in table.splitlines()[0]
    assert table.count("| 0.41 | 0.62 |") == 3


def test_chest_heldout_copy_keeps_each_patient_on_one_side(tmp_path):
    """bench/chest_heldout.py: the films variants are chosen on are other patients' films."""
    heldout = importlib.import_module("chest_heldout")
    src = tmp_path / "src"
    names = {
        "NORMAL": [f"IM-{k:04d}-0001.jpeg" for k in range(10)] + ["IM-0001-0002.jpeg"],
        "PNEUMONIA": [f"person{k}_bacteria_{j}.jpeg" for k in range(10) for j in (1, 2)],
    }
    for cls, files in names.items():
        for split, listed in (("train", files), ("val", files[:2])):
            (src / split / cls).mkdir(parents=True)
            for name in listed:
                (src / split / cls / (f"val_{name}" if split == "val" else name)).write_bytes(b"x")
    counts = heldout.build_copy(src, tmp_path / "copy")
    kept = {p.name for p in (tmp_path / "copy" / "train").rglob("*.jpeg")}
    held = {p.name for p in (tmp_path / "copy" / "test").rglob("*.jpeg")}
    assert not kept & held and len(kept) + len(held) == 31 + 4
    assert counts == {"train": len(kept), "test": len(held)}
    assert {f"val_{n}" for n in names["NORMAL"][:2] + names["PNEUMONIA"][:2]} <= held

    def patients(files: set[str]) -> set[str]:
        return {re.search(heldout.PATIENT, n).group(0) for n in files if not n.startswith("val_")}

    assert not patients(kept) & patients(held) and "IM-0001" in patients(kept | held)
    # About a fifth of train/ per class went to the held-out side, and the links resolve
    assert 4 <= len([n for n in held if n.startswith("person")]) <= 6
    assert all(p.resolve().is_file() for p in (tmp_path / "copy").rglob("*.jpeg"))


def test_a_section_names_the_machine_its_runs_had():
    """`--only` reruns a section on whatever machine the session has: the section says which."""
    comp = next(c for c in plan.COMPARISONS if c.key == "chest_recipe")
    run = {"seed": 0, "test_acc": 0.8, "val_acc": 0.9, "test_recall": 0.9,
           "test_specificity": 0.7, "test_auroc": 0.9, "epochs": 20, "wall_s": 70.0,
           "model": "cnn", "machine": "Intel(R) Xeon(R) Processor, 2 cores, AVX-512 BF16"}  # fmt: skip
    runs = {"study": [run], "other1": [run], "other2": [run], "best": [run]}
    text = recipes_md.render_comparison(comp, runs)
    assert ", on Intel(R) Xeon(R) Processor, 2 cores, AVX-512 BF16." in text
    other = dict(run, machine="AMD EPYC, 2 cores")
    text = recipes_md.render_comparison(comp, {**runs, "best": [other]})
    assert "on Intel(R) Xeon(R) Processor, 2 cores, AVX-512 BF16 and AMD EPYC, 2 cores." in text
    # Runs from before the machine was recorded fall back on the file's Machine line
    old = {role: [{k: v for k, v in run.items() if k != "machine"}] for role in runs}
    assert ", on the machine above." in recipes_md.render_comparison(comp, old)
