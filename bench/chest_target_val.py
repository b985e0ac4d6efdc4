"""Validation films from the test source: does choosing the checkpoint and the cut on them help?

    python bench/chest_target_val.py --work logs/chest_target_val   # -> bench/CHEST_TARGET_VAL.md

The README's advice for a test set from another source is a validation set that looks like it.
chest_xray-small has no such films besides its test split, so this takes a few of them: a copy
(symbolic links, nothing copied) with all 300 training films as `train/`, every 6th test film per
class (sorted by name: 10 + 10) as `val/` and the other 100 as `test/`. best_chest trains on it as
bench/RECIPES.md's chest comparison does (60 s of fit, `data=folder`, one run at a time, runs
already done kept), seeds 0-2, twice: with `data.use_given_val=true` (the 20 test-source films
choose the best checkpoint and the cut, `model.threshold=auto`) and as the recipe is (30 training
films carved for validation, the given `val/` ignored). Both are scored on the same 100 test films,
which neither run trains or validates on. Kaggle's 16 `val/` films come from the training source
and are left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.chest_films import (  # noqa: E402
    CLASSES,
    bench_parser,
    link_films,
    run_cells,
    write_report,
)
from benchlib.common import find_dataset, machine_text  # noqa: E402
from chest_heldout import run_or_reuse  # noqa: E402

EVERY = 6  # every 6th test film per class becomes a validation film
ARMS = {
    "validation carved from the training films (best_chest as it is)": [],
    "validation = 20 films of the test source": ["data.use_given_val=true"],
}


def build_copy(source: Path, out: Path) -> dict[str, int]:
    """``out/{train,val,test}/{NORMAL,PNEUMONIA}``: links into ``source`` as described above."""
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for y, name in enumerate(CLASSES):
        test = sorted((source / "test" / name).iterdir())
        splits["train"] += [(p, y) for p in sorted((source / "train" / name).iterdir())]
        splits["val"] += [(p, y) for p in test[::EVERY]]
        splits["test"] += [(p, y) for i, p in enumerate(test) if i % EVERY]
    return {split: link_films(out / split, samples) for split, samples in splits.items()}


def render(rows: dict[str, list[dict]], counts: dict[str, int], command: str, where: str) -> str:
    lines = [
        "# Chest recipe: validation films from the test source",
        "",
        f"Command: `{command}` (the module docstring says how the copy is split).",
        "",
        f"best_chest, 60 s of fit a run, one run at a time on {where}, `trainer.precision=auto`;"
        f" {counts['train']} training films, {counts['val']} validation films taken from the"
        f" test split, scored on the other {counts['test']} test films. Mean ± std (sample) over"
        " the seeds; `cut`: each seed's threshold on P(PNEUMONIA).",
        "",
        "| validation | seeds | test acc % | specificity % | sensitivity % | AUROC | epochs | cut |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, runs in rows.items():
        cuts = "/".join(f"{r['threshold']:.2f}" for r in runs)
        lines.append(f"| {arm} | {len(runs)} | {run_cells(runs)} | {cuts} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(
        "chest_target_val.py", __doc__, "CHEST_TARGET_VAL.md", "the linked copy, runs, cache"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    root = work / "chest_xray-target-val"
    counts = build_copy(find_dataset("chest_xray-small", args.data), root)
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for arm, overrides in ARMS.items():
            rows.setdefault(arm, []).append(run_or_reuse(root, work, seed, overrides))
            print(seed, arm, round(100 * rows[arm][-1]["test_acc"], 1), flush=True)
    return write_report(
        args, "chest_target_val.py", lambda cmd: render(rows, counts, cmd, machine_text())
    )


if __name__ == "__main__":
    raise SystemExit(main())
