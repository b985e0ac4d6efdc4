"""The study's recipes against the tuned `best_*` ones, at an equal wall-clock budget.

    python bench/recipes.py                       # -> bench/RECIPES.md (= make bench-recipes)
    python bench/recipes.py --only fruits_cnn --seeds 1 --out logs/pilot.md   # a pilot
    python bench/recipes.py --list                # the comparisons, budgets and seeds
    python bench/recipes.py --only chest_recipe   # rewrites only that section of RECIPES.md

Every run is `python -m fruitnet.train experiment=<recipe> data.root=<sample set> seed=<s>
trainer.max_time=<budget>` in its own process, on the real sample images (fruits-360-small,
chest_xray-small). The budget caps Lightning's fit time (`trainer.max_time`); a two-stage study
recipe runs stage 1 with its share of the budget (in proportion to its epochs) and stage 2 resumes
it with the whole budget as the cap, because Lightning's Timer is restored from the checkpoint and
keeps counting (so both stages together get exactly the budget). The study and best runs of a seed
alternate, so a slow phase of this shared machine hits both alike.

It writes bench/RECIPES.md (the command, the tables, the history of the tuning) and, as run
outputs that git ignores, the training curves bench/recipes/<comparison>.png (through
`fruitnet.report.write_curves`) and the per-seed numbers bench/recipes/results.json. Nothing is
asserted: where `best_*` does not win, the file says so. The comparisons are in
bench/cases/recipes.yaml, the report's prose in bench/templates/recipes/. `--only KEY` on an
existing file rewrites the sections of those comparisons (and their summary lines) and keeps
every other section as it was; `--into RUN` adds them to an earlier call's runs instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The bench's code (benchlib) lives beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import REPO, find_dataset, machine_text  # noqa: E402
from benchlib.recipe_panel import merge  # noqa: E402
from benchlib.recipe_plan import COMPARISONS, Comparison  # noqa: E402
from benchlib.recipe_runs import (  # noqa: E402
    RunFailed,
    Runs,
    load_manifest,
    machines,
    run_recipe,
    slim,
)
from benchlib.recipes_md import render, shown_command, write_curves  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "RECIPES.md"
# Run directories (checkpoints: ~36 MiB each for the CNN) stay out of the repository's tracked tree
DEFAULT_WORK = REPO / "logs" / "recipes"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/recipes.py", description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", metavar="DIR", help="folder holding fruits-360-small and chest_xray-small"
    )
    p.add_argument("--only", nargs="+", metavar="KEY", help="these comparisons only (see --list)")
    p.add_argument("--seeds", type=int, metavar="N", help="first N seeds of each comparison")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (pilots)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file (curves: <dir>/recipes/)")
    p.add_argument("--work", default=str(DEFAULT_WORK), help="where the run directories go")
    p.add_argument("--list", action="store_true", help="print the comparisons and exit")
    p.add_argument(
        "--render",
        metavar="WORK_RUN",
        help="rewrite --out from the finished runs of an earlier call (its logs/recipes/<ts>); "
        "with --only, only those sections of it",
    )
    p.add_argument(
        "--into",
        metavar="WORK_RUN",
        help="add the selected comparisons to an earlier call's runs and file",
    )
    return p


@dataclasses.dataclass
class Session:
    """One call's state, or an earlier call's that --into adds to; what manifest.json keeps."""

    work: Path
    argv: list[str]
    started: datetime.datetime
    also: list[list[str]] = dataclasses.field(default_factory=list)
    earlier_minutes: float = 0.0
    done: list[Comparison] = dataclasses.field(default_factory=list)
    all_runs: dict[str, Runs] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def resume(cls, work: Path, argv: list[str]) -> Session:
        """An earlier call's runs (and its file), to add comparisons to."""
        manifest = json.loads((work / "manifest.json").read_text())
        done, all_runs = load_manifest(work, manifest)
        return cls(
            work=work, argv=manifest["argv"], also=[*manifest.get("also", []), argv],
            started=datetime.datetime.fromisoformat(manifest["started"]),
            earlier_minutes=manifest["minutes"], done=done, all_runs=all_runs,
            failures=list(manifest["failures"]),
        )  # fmt: skip

    def manifest(self, minutes: float) -> dict[str, Any]:
        """What --render needs to rewrite the file from these runs (e.g. after editing the
        history template)."""
        return {
            "argv": self.argv,
            "also": self.also,
            "started": self.started.isoformat(),
            "minutes": minutes,
            "failures": self.failures,
            "comparisons": [
                {
                    "key": c.key,
                    "budget_s": c.budget_s,
                    "seeds": c.seeds,
                    "load_avg": load_range(self.all_runs.get(c.key, {})),
                    "machine": machines(self.all_runs.get(c.key, {})),
                }  # fmt: skip
                for c in self.done
            ],
        }


def load_range(runs: Runs) -> list[float] | None:
    """The lowest and highest 1-minute load average at the start of a comparison's runs (kept in
    manifest.json: --render has no other record of it)."""
    loads = [r["load_avg"] for rs in runs.values() for r in rs if r.get("load_avg") is not None]
    return [min(loads), max(loads)] if loads else None


def print_list() -> None:
    for c in COMPARISONS:
        print(
            f"{c.key:18s} {c.dataset:18s} {c.budget_s:4d} s  seeds {list(c.seeds)}  "
            f"{c.study.label} vs {c.best.label}"
        )


def run_comparison(comp: Comparison, session: Session, root: Path) -> None:
    """Every seed of one comparison; study then best for each seed, so drift of the machine
    hits both."""
    runs = session.all_runs.setdefault(comp.key, {role: [] for role, _ in comp.roles()})
    print(f"{comp.key}: {comp.dataset}, {comp.budget_s} s, seeds {list(comp.seeds)}", flush=True)
    roles = comp.roles()
    if comp.study_from:
        runs["study"] = session.all_runs.get(comp.study_from, {}).get("study", [])
        roles = roles[1:]
    where = machine_text()
    for seed in comp.seeds:
        for role, recipe in roles:
            load = os.getloadavg()[0]  # the machine is shared: the report says how busy it was
            try:
                res = run_recipe(comp, role, recipe, seed, root, session.work)
            except RunFailed as err:
                session.failures.append(f"{comp.key} {recipe.label} seed {seed}: {err}")
                print(f"  FAILED: {session.failures[-1]}", flush=True)
                continue
            runs[role].append({**res, "load_avg": load, "machine": where})
            print(
                f"  {role} seed {seed}: test {res.get('test_acc')} val {res.get('val_acc')} "
                f"epochs {res.get('stage_epochs')} {res['wall_s']:.0f} s",
                flush=True,
            )


def write_outputs(
    session: Session, out: Path, minutes: float, merge_into: bool = False, rendered: bool = False
) -> str:
    """The report and its per-seed numbers. ``merge_into`` (``--only`` without ``--into`` on an
    existing file): only this call's comparisons are rewritten in it, every other section and
    number stays as it was; the Command line gains this call, unless it only re-``rendered``
    an earlier call's runs (which it already names)."""
    text = render(
        session.done, session.all_runs, session.argv, session.started, minutes,
        session.failures, session.also,
    )  # fmt: skip
    numbers = out.parent / "recipes" / "results.json"
    per_seed = slim(session.all_runs)
    if merge_into and out.is_file():
        note = f"`{shown_command(session.argv)}` ({session.started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} minutes)"
        text = merge(
            out.read_text(), text, [c.key for c in session.done], None if rendered else note
        )
        if numbers.is_file():
            per_seed = {**json.loads(numbers.read_text()), **per_seed}
    out.write_text(text)
    numbers.parent.mkdir(parents=True, exist_ok=True)
    numbers.write_text(json.dumps(per_seed, indent=1))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    comps = [c for c in COMPARISONS if (c.key in args.only if args.only else c.default)]
    if args.list or not comps:
        print_list()
        return 0 if comps else 2
    if args.render:
        return rerender(Path(args.render), Path(args.out), merge_into=bool(args.only))
    roots = {
        name: find_dataset(name, args.data and Path(args.data) / name)
        for name in {c.dataset for c in comps}
    }
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    if args.into:
        session = Session.resume(Path(args.into), argv)
    else:
        work = Path(args.work) / started.strftime("%Y-%m-%d_%H-%M-%S")
        session = Session(work=work, argv=argv, started=started)
    out, text = Path(args.out), ""
    for comp in comps:
        budget = max(1, round(comp.budget_s * args.budget_scale))
        seeds = comp.seeds[: args.seeds] if args.seeds else comp.seeds
        comp = dataclasses.replace(comp, budget_s=budget, seeds=tuple(seeds))
        run_comparison(comp, session, roots[comp.dataset])
        write_curves(comp, session.all_runs[comp.key], out.parent / "recipes")
        session.done.append(comp)
        # Written after every comparison, so an interrupted run keeps what it measured
        minutes = session.earlier_minutes + (time.perf_counter() - t0) / 60
        text = write_outputs(session, out, minutes, merge_into=bool(args.only and not args.into))
        (session.work / "manifest.json").write_text(json.dumps(session.manifest(minutes), indent=1))
    print(text)
    print(f"wrote {out}")
    return 0


def rerender(work: Path, out: Path, merge_into: bool = False) -> int:
    """--render: the markdown, curves and results.json again, from an earlier call's runs;
    with --only, only their sections of an existing file (`write_outputs`)."""
    manifest = json.loads((work / "manifest.json").read_text())
    done, all_runs = load_manifest(work, manifest)
    for comp in done:
        write_curves(comp, all_runs[comp.key], out.parent / "recipes")
    session = Session(
        work=work, argv=manifest["argv"], also=manifest.get("also", []),
        started=datetime.datetime.fromisoformat(manifest["started"]), done=done,
        all_runs=all_runs, failures=manifest["failures"],
    )  # fmt: skip
    write_outputs(session, out, manifest["minutes"], merge_into=merge_into, rendered=True)
    print(f"wrote {out} from {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
