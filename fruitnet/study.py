"""`python -m fruitnet.study`: the study's protocol end to end, resumable, beside its own numbers.

    python -m fruitnet.study data=fruits data.root=/data/fruits-360
    python -m fruitnet.study data=fruits study.runs=[study_cnn_stage1,study_cnn_stage2]
    python -m fruitnet.study data=chest_xray data.root=/data/chest_xray study.dry_run=true
    python -m fruitnet.study data=fruits study.report_only=true

Prints the plan first (runs, their weights and data, a time estimate per run from a few timed
steps on this device), then trains each run as its own ``python -m fruitnet.train`` process in
logs/study/<dataset>/<run>/: a finished run (results.json) is skipped, an interrupted one resumes
from its last.ckpt. Ends with study.md and study.png in logs/study/<dataset>/.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fruitnet.config import CONFIG_PATH, check_keys, hydra_choices, run_entry

log = logging.getLogger("fruitnet.study")


def common_overrides(cfg: DictConfig) -> list[str]:
    """What every run gets: the study's ``data.*`` overrides (data.root=...) as typed, then
    ``study.overrides``."""
    _, typed = hydra_choices()
    data = [o for o in typed if o.split("=", 1)[0].startswith("data.")]
    return [*data, *[str(o) for o in cfg.study.overrides]]


def plan_rows(cfg: DictConfig, runs: list, root: Path) -> list[dict[str, Any]]:
    """One row per run: its state, its composed training config's needs, and the estimate."""
    from hydra import compose

    from fruitnet import study_plan as sp

    common = common_overrides(cfg)
    startup = sp.startup_seconds() if cfg.study.estimate else 0.0
    epochs_of: dict[str, int] = {}
    rows = []
    for run in runs:
        folder = sp.run_dir(root, run)
        args = sp.train_overrides(run, root, common, cfg.study.epochs, None)
        composed = compose(config_name="train", overrides=[a for a in args if "hydra" not in a])
        row = {"run": run, "folder": folder, "state": sp.state(folder), "args": args}
        row["weights"] = sp.weights_problem(composed)
        row["data"] = str(composed.data.get("root"))
        epochs_of[run.name] = int(composed.trainer.max_epochs)
        row["estimate"] = None
        if cfg.study.estimate and row["state"] != "done":
            try:
                start = epochs_of.get(run.after, 0) if run.after else 0
                row["estimate"] = sp.estimate_seconds(composed, startup, start)
            except Exception as err:  # noqa: BLE001 - the plan shows why, the run then fails
                row["data"] += f" ({type(err).__name__}: {err})"
            sp.release_device()
        rows.append(row)
    return rows


def print_plan(dataset: str, root: Path, rows: list[dict[str, Any]]) -> None:
    from fruitnet.study_plan import duration

    lines = [f"Study plan: {dataset}, {len(rows)} runs in {root}"]
    total = 0.0
    for row in rows:
        est = row["estimate"]
        when = "finished, skipped" if row["state"] == "done" else "–"
        if est is not None:
            total += est["seconds"]
            when = (
                f"~{duration(est['seconds'])} ({est['epochs']} epochs x {est['steps_per_epoch']} "
                f"steps at {est['step_s']:.2f} s, {est['device']}, {est['precision']})"
            )
        resume = " (resumes its last.ckpt)" if row["state"] == "partial" else ""
        after = f" after {row['run'].after}" if row["run"].after else ""
        weights = row["weights"] or "weights ok"
        lines.append(f"  {row['run'].name}{after}{resume}: {when}")
        lines.append(f"      data {row['data']}; {weights}")
    if any(row["estimate"] for row in rows):
        lines.append(f"  estimated total: ~{duration(total)} (from timed steps on this device)")
    print("\n".join(lines), flush=True)


def _die_with_parent() -> None:
    # A study killed by SIGKILL (a lost allocation) must not leave its run training on unseen:
    # the rerun would then race it for the same folder. Linux only.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(cfg: DictConfig, run: Any, root: Path) -> subprocess.Popen:
    """Start one run's training process (through a Hydra launcher when study.launcher is set)."""
    from fruitnet import study_plan as sp

    args = sp.train_overrides(
        run, root, common_overrides(cfg), cfg.study.epochs, cfg.study.checkpoint_every_n_steps
    )
    if cfg.study.launcher:
        folder = sp.run_dir(root, run)
        args = [a for a in args if not a.startswith("hydra.run.dir=")]
        args = ["-m", f"hydra/launcher={cfg.study.launcher}", f"hydra.sweep.dir={folder}",
                "hydra.sweep.subdir=.", *args]  # fmt: skip
    command = sp.train_command(args)
    log.info("study: %s: %s", run.name, " ".join(command))
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(command, preexec_fn=preexec)  # noqa: PLW1509 - no threads here


def execute(cfg: DictConfig, runs: list, root: Path, estimates: dict[str, float]) -> list[str]:
    """Train the runs not finished yet, in waves: with a launcher, every run whose predecessor is
    done starts at once; locally, one after the other. Each run's measured time (this launch,
    process start to exit) goes beside the plan's estimate into <run>/study_time.json. Returns
    the runs that failed."""
    from fruitnet.files import write_json
    from fruitnet.study_plan import run_dir, state

    pending = [r for r in runs if state(run_dir(root, r)) != "done"]
    failed: list[str] = []
    while pending:
        ready = [
            r
            for r in pending
            if r.after is None or state(run_dir(root, _named(runs, r.after))) == "done"
        ]  # noqa: E501
        blocked = [r for r in pending if r.after in failed]
        failed += [r.name for r in blocked]
        ready = [r for r in ready if r not in blocked]
        if not ready:
            failed += [r.name for r in pending if r not in blocked]
            break
        wave = ready if cfg.study.launcher else ready[:1]
        started = time.perf_counter()
        procs = [(r, launch(cfg, r, root)) for r in wave]
        for run, proc in procs:
            code = proc.wait()
            seconds = time.perf_counter() - started
            timing = {"measured_s": seconds, "estimate_s": estimates.get(run.name)}
            run_dir(root, run).mkdir(parents=True, exist_ok=True)
            write_json(run_dir(root, run) / "study_time.json", timing)
            if code != 0 or state(run_dir(root, run)) != "done":
                log.error("fruitnet: study run %s failed (exit %s)", run.name, proc.returncode)
                failed.append(run.name)
        pending = [r for r in pending if r not in wave and r not in blocked]
    return failed


def _named(runs: list, name: str) -> Any:
    from fruitnet.study_plan import StudyRun

    return next((r for r in runs if r.name == name), StudyRun(name))


def run(cfg: DictConfig) -> Path:
    """Plan, train what is not finished, write study.md / study.png; returns study.md."""
    from fruitnet import study_plan as sp
    from fruitnet.study_report import write_study_report

    dataset = str(cfg.study.dataset)
    runs = sp.protocol(dataset, list(cfg.study.runs or []))
    root = Path(str(cfg.study.root)).absolute()
    if cfg.study.report_only:
        return _report(write_study_report(dataset, runs, root))
    rows = plan_rows(cfg, runs, root)
    print_plan(dataset, root, rows)
    missing = [r for r in rows if r["weights"] and r["state"] != "done"]
    if cfg.study.dry_run:
        return root / "study.md"
    if missing:
        raise sp.StudyError(
            f"pretrained weights missing for {', '.join(r['run'].name for r in missing)} "
            "(see the plan above); nothing was trained"
        )
    estimates = {r["run"].name: r["estimate"]["seconds"] for r in rows if r["estimate"]}
    failed = execute(cfg, runs, root, estimates)
    path = _report(write_study_report(dataset, runs, root))
    if failed:
        raise sp.StudyError(f"study runs failed: {', '.join(failed)}; rerun the same command")
    return path


def _report(path: Path) -> Path:
    print(f"study report: {path} and {path.with_suffix('.png')}", flush=True)
    return path


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="study")
def _main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg.study)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_entry(run, cfg)


def main() -> None:
    check_keys(sys.argv[1:], "study")
    _main()


if __name__ == "__main__":
    main()
