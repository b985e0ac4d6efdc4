"""Running a recipe (one `python -m fruitnet.train` process per stage) and reading finished runs
back from their run directories."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.common import REPO, run_logged, shown_value
from benchlib.recipe_panel import explain_run, read_explained
from benchlib.recipe_plan import COMMON, COMPARISONS, Comparison, Recipe
from benchlib.recipe_stats import combine_stages, max_time, stage_caps

Runs = dict[str, list[dict[str, Any]]]  # role ("study", "best") -> one result per finished seed

# The per-seed numbers behind the tables (bench/recipes/results.json): no paths
SLIM_KEYS = (
    "seed",
    "test_acc",
    "val_acc",
    "test_recall",
    "test_specificity",
    "test_auroc",
    "epochs",
    "stage_epochs",
    "wall_s",
    "process_s",
    "precision",
    "weights_source",
    "threshold",
    "cam_central_share",
    "cam_central_share_per_class",
    "load_avg",
    "machine",
)


class RunFailed(RuntimeError):
    """A fruitnet.train process failed; the comparison goes on without that seed."""


def command(
    comp: Comparison, recipe: Recipe, stage: int, seed: int, root: Path, run_dir: Path, cap: float
) -> list[str]:
    exp = recipe.stages[stage][0]
    cmd = [sys.executable, "-m", "fruitnet.train", f"experiment={exp}"]
    if comp.data:
        cmd.append(f"data={comp.data}")
    cmd += [
        f"data.root={root}",
        f"seed={seed}",
        f"trainer.max_time={max_time(cap)}",
        *COMMON,
        *recipe.overrides,
        f"hydra.run.dir={run_dir}",
    ]
    if stage < len(recipe.stages) - 1:
        cmd.append("test=false")  # only the last stage is judged
    return cmd


def stage_dirs(work: Path, key: str, role: str, seed: int, recipe: Recipe) -> list[Path]:
    return [work / key / f"{role}_seed{seed}" / f"stage{i + 1}" for i in range(len(recipe.stages))]


def run_recipe(
    comp: Comparison, role: str, recipe: Recipe, seed: int, root: Path, work: Path
) -> dict[str, Any]:
    caps = stage_caps(comp.budget_s, [e for _, e in recipe.stages])
    dirs = stage_dirs(work, comp.key, role, seed, recipe)
    results, prev = [], None
    for i, (cap, run_dir) in enumerate(zip(caps, dirs, strict=True)):
        cmd = command(comp, recipe, i, seed, root, run_dir, cap)
        if prev:
            cmd.append(f"ckpt_path={prev}")
        run_dir.mkdir(parents=True, exist_ok=True)
        print("  $", shlex.join(cmd[1:]), flush=True)
        code, seconds = run_logged(cmd, run_dir / "stdout.log")
        if code != 0:
            # The failure is listed in RECIPES.md: the log's path relative to the repo
            outside = not work.resolve().is_relative_to(REPO)
            log = shown_value(str(run_dir / "stdout.log"), {work: "<work>"} if outside else None)
            raise RunFailed(f"exit {code}, see {log}")
        res = json.loads((run_dir / "results.json").read_text())
        res["process_s"] = seconds
        results.append(res)
        prev = res.get("last_ckpt")
    out = {**combine_stages(results), "run_dirs": [str(d) for d in dirs]}
    if comp.explain:
        out.update(explain_run(out, dirs[-1].parent / "eval"))
    return out


def joined_rows(run_dirs: Sequence[Path]) -> list[dict[str, float]]:
    """The stages' csv/metrics.csv rows as one run (a resumed stage logs only its own epochs)."""
    from fruitnet.report import read_metrics

    rows: list[dict[str, float]] = []
    for d in run_dirs:
        rows.extend(read_metrics(d))
    return rows


def load_runs(work: Path, comp: Comparison) -> Runs:
    """The finished seeds of one comparison, read back from its run directories."""
    runs: Runs = {role: [] for role, _ in comp.roles()}
    for role, recipe in comp.roles():
        key = comp.study_from if role == "study" and comp.study_from else comp.key
        for seed in comp.seeds:
            dirs = stage_dirs(work, key, role, seed, recipe)
            files = [d / "results.json" for d in dirs]
            if all(f.is_file() for f in files):
                res = combine_stages([json.loads(f.read_text()) for f in files])
                res.update(read_explained(dirs[-1].parent / "eval") if comp.explain else {})
                runs[role].append({**res, "run_dirs": [str(d) for d in dirs]})
    return runs


def load_manifest(work: Path, manifest: dict[str, Any]) -> tuple[list[Comparison], dict[str, Runs]]:
    """The comparisons of an earlier call and their finished runs."""
    by_key = {c.key: c for c in COMPARISONS}
    done, all_runs = [], {}
    for entry in manifest["comparisons"]:
        comp = dataclasses.replace(
            by_key[entry["key"]], budget_s=entry["budget_s"], seeds=tuple(entry["seeds"])
        )
        all_runs[comp.key] = load_runs(work, comp)
        for rs in all_runs[comp.key].values():  # the machine and its load, as the first call saw
            for r in rs:
                r.setdefault("load_range", entry.get("load_avg"))
                if entry.get("machine"):
                    r.setdefault("machine", " and ".join(entry["machine"]))
        done.append(comp)
    return done, all_runs


def machines(runs: Runs) -> list[str]:
    """The machines a comparison's runs had (`benchlib.common.machine_text`), first seen first;
    empty for runs from before they were recorded."""
    seen = [r["machine"] for rs in runs.values() for r in rs if r.get("machine")]
    return list(dict.fromkeys(seen))


def slim(all_runs: dict[str, Runs]) -> dict[str, Any]:
    """The per-seed numbers behind the tables (bench/recipes/results.json), no paths."""
    return {
        k: {role: [{key: r.get(key) for key in SLIM_KEYS} for r in rs] for role, rs in v.items()}
        for k, v in all_runs.items()
    }
