"""The chest recipe's held-out protocol: choose variants on films no run trains on, never on test.

    python bench/chest_heldout.py --out logs/chest_heldout            # builds the copy, prints runs
    python bench/chest_heldout.py --out logs/chest_heldout --run 'model.kwargs.input_norm=image'

The copy (symbolic links into chest_xray-small, nothing copied) has as `test/` the 60 films of
`train/` that `data.val_fraction=0.2 data.val_group=<patient regex>` carves by patient (seed 42)
plus the 16 of Kaggle's `val/`, and as `train/` the other 240, from which each run carves its own
10 % for validation. So a variant is judged on other patients' films, as the real test split is,
and the 120 test films of chest_xray-small stay unseen until the recipe is fixed
(bench/templates/recipes/chest_history.md has the rule and the tables). `--run` trains
`experiment=best_chest` with the given overrides on seeds 0, 1, 2 (`--seeds`) one after the other and prints
held-out accuracy, specificity, sensitivity, AUROC and epochs per seed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.chest_films import CLASSES, link_films  # noqa: E402
from benchlib.common import REPO, find_dataset  # noqa: E402
from benchlib.recipe_plan import COMMON as BENCH_COMMON  # noqa: E402

from fruitnet.data.scan import carve_val  # noqa: E402

PATIENT = r"person\d+|(NORMAL2-)?IM-\d+"
# The recipes bench's chest comparison: its common overrides, data=folder, 60 s of fit
COMMON = ["experiment=best_chest", "data=folder", *BENCH_COMMON, "trainer.max_time=00:00:01:00"]


def build_copy(source: Path, out: Path) -> dict[str, int]:
    """``out/{train,test}/{NORMAL,PNEUMONIA}``: links to ``source``'s files, split as above."""
    train = [
        (path, y)
        for y, name in enumerate(CLASSES)
        for path in sorted((source / "train" / name).iterdir())
    ]
    kept, carved = carve_val(train, 0.2, seed=42, group=PATIENT)
    extra = [
        (p, y) for y, name in enumerate(CLASSES) for p in sorted((source / "val" / name).iterdir())
    ]
    return {
        "train": link_films(out / "train", kept),
        "test": link_films(out / "test", carved + extra),
    }


def run_dir_of(work: Path, seed: int, overrides: list[str]) -> Path:
    # A folder name Hydra's override parser and Path.suffix both leave alone
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "_".join(overrides) or "best_chest")
    return work / "runs" / f"{name}_seed{seed}"


def run_seed(root: Path, work: Path, seed: int, overrides: list[str]) -> dict:
    run_dir = run_dir_of(work, seed, overrides)
    cmd = [sys.executable, "-m", "fruitnet.train", *COMMON, f"data.root={root}", f"seed={seed}"]
    cmd += [*overrides, f"hydra.run.dir={run_dir}", f"paths.cache_dir={work / 'cache'}"]
    print("+", shlex.join(cmd), flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / f"{run_dir.name}.log"
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"seed {seed} failed (exit {code}); its log: {log_path}")
    return json.loads((run_dir / "results.json").read_text())


def run_or_reuse(root: Path, work: Path, seed: int, overrides: list[str]) -> dict:
    """`run_seed`'s results, from the run folder when an earlier call finished it."""
    done = run_dir_of(work, seed, overrides) / "results.json"
    return json.loads(done.read_text()) if done.exists() else run_seed(root, work, seed, overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/chest_heldout.py", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", metavar="DIR", help="folder holding chest_xray-small")
    p.add_argument("--out", required=True, help="work folder: the linked copy, runs, cache")
    p.add_argument("--run", nargs="*", metavar="OVERRIDE", help="train seeds 0-2 with these")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    root = out / "chest_xray-heldout"
    counts = build_copy(find_dataset("chest_xray-small", args.data), root)
    print(f"held-out copy: {root} ({counts['train']} train, {counts['test']} held-out films)")
    if args.run is None:
        return 0
    for seed in args.seeds:
        r = run_seed(root, out, seed, args.run)
        print(
            f"seed {seed}: acc {100 * r['test_acc']:.1f} spec {100 * r['test_specificity']:.1f} "
            f"sens {100 * r['test_recall']:.1f} auroc {r['test_auroc']:.3f} "
            f"epochs {r['epochs']} images/s {r['train_images_per_s']:.0f} cut {r['threshold']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
