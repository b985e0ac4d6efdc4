"""End to end (the headline): the default `python -m fruitnet.train` command from the JPEG files
against the study's script (`bench/study_loop.py`), each run in a fresh process, the two
interleaved per case and round; medians over the rounds."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import torch

from benchlib.common import BENCH, REPO
from benchlib.compose import CASES, DATASET, QUICK_BATCH, accelerator
from fruitnet.runtime import resolve_precision

# The timing callback the fruitnet runs get (it writes the same timeline as study_loop.py)
CLOCK = "fruitnet.callbacks.measure.EpochClock"


def timeline(t: dict, t0: float, wall: float) -> dict:
    """Per-epoch wall times from an EpochClock / study_loop.py timeline.

    An epoch runs from its start to the next epoch's start (everything between epochs included:
    validation, checkpoints, loader restarts), the last one to its end (after validation and its
    checkpoint). The steady epoch time is the median of the epochs after the first.
    """
    ep = t["epochs"]
    walls = [
        (ep[k + 1]["start"] if k + 1 < len(ep) else ep[k]["end"]) - ep[k]["start"]
        for k in range(len(ep))
    ]
    steady = walls[1:] or walls
    epoch_s = statistics.median(steady)
    val_s = statistics.median(
        [e["end"] - e["train_end"] for e in (ep[1:] or ep) if "train_end" in e and "end" in e]
    )
    images = ep[-1]["images"]
    return {
        "first_step_s": t["first_step"] - t0,
        "fit_start_s": t.get("fit_start", t["first_step"]) - t0,
        "epoch1_s": walls[0],
        "epoch_s": epoch_s,
        "val_s": val_s,
        "images": images,
        "images_per_s": images / epoch_s,
        "wall_s": wall,
    }


def run_timed(cmd: list[str], out: Path, env: dict, what: str) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(
            f"bench end-to-end: {what} failed (exit {proc.returncode}):\n"
            f"{shlex.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return timeline(json.loads(out.read_text()), t0, wall)


def e2e_env(args, cache: Path) -> dict:
    env = dict(os.environ)
    env["FRUITNET_CACHE"] = str(cache)  # a fresh cache per run: it is built inside the timing
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def e2e_study(args, root, device, case: dict, epochs: int, work: Path) -> dict:
    out = work / f"study-{uuid.uuid4().hex[:8]}.json"
    cmd = [
        sys.executable, str(BENCH / "study_loop.py"), f"--root={root}",
        f"--model={case['model']}", f"--batch={case['batch']}", f"--epochs={epochs}",
        f"--out={out}", f"--device={device.type}", "--workers=2",
    ]  # fmt: skip
    if case["limit"]:
        cmd.append(f"--limit-batches={case['limit']}")
    if args.quick:
        cmd.append("--limit-val-batches=2")
    env = e2e_env(args, work / "unused-cache")
    return run_timed(cmd, out, env, f"study loop {case['model']}")


def e2e_command(root, device, case: dict, epochs: int, quick: bool) -> list[str]:
    """The default fruitnet command for this case (what a user types), as an argument list."""
    name, limit = case["model"], case["limit"]
    cmd = ["python", "-m", "fruitnet.train", f"model={name}", "data=fruits", f"data.root={root}",
           f"data.batch_size={case['batch']}", f"trainer.max_epochs={epochs}"]  # fmt: skip
    if name != "cnn":
        cmd.append("model.pretrained=false")  # offline machine; the speed does not depend on it
    if limit:
        cmd.append(f"trainer.limit_train_batches={limit}")
    if quick:
        cmd.append("trainer.limit_val_batches=2")
    if device.type == "cpu" and torch.cuda.is_available():
        cmd.append("trainer=cpu")
    elif device.type == "cuda" and torch.cuda.device_count() > 1:
        cmd.append("trainer.devices=1")  # devices=auto would start DDP over every GPU
    return cmd + list(case["extra"])


def e2e_fruitnet(args, root, device, case: dict, epochs: int, work: Path) -> dict:
    run = work / f"fruitnet-{uuid.uuid4().hex[:8]}"
    out = run / "clock.json"
    cmd = e2e_command(root, device, case, epochs, args.quick)
    cmd[0] = sys.executable
    cmd += [
        "test=false",  # after fit, outside the timing; saves bench time
        f"hydra.run.dir={run}",
        f"+callbacks.bench_clock._target_={CLOCK}",
        f"+callbacks.bench_clock.out={out}",
    ]
    result = run_timed(cmd, out, e2e_env(args, run / "cache"), f"fruitnet.train {case['model']}")
    shutil.rmtree(run, ignore_errors=True)  # checkpoints and the decoded cache
    return result


def e2e_cases(args, device: torch.device) -> list[dict]:
    """The cases of this run: --models, --quick (one tiny case) and the device's batch sizes."""
    cases = [dict(c) for c in CASES["e2e"] if not args.models or c["model"] in args.models]
    if args.quick:  # checks the script: one case, two tiny runs
        cases = cases[:1]
    if device.type == "cuda":  # one batch size per model on a GPU: the study's
        unique: dict[tuple, dict] = {}
        for c in cases:
            c.update(batch=1024 if c["model"] == "cnn" else 128, limit=None)
            unique.setdefault((c["model"], c["batch"], c["limit"], tuple(c["extra"])), c)
        cases = list(unique.values())
    if args.quick:
        for c in cases:
            c.update(batch=QUICK_BATCH[c["model"]], limit=2)
    return cases


def _study_key(case: dict) -> tuple:
    return case["model"], case["batch"], case["limit"]


def measure_e2e(args, root: Path, device: torch.device, work: Path) -> list[dict]:
    """The default command against the study's script, interleaved per case and round."""
    epochs = args.e2e_epochs
    cases = e2e_cases(args, device)
    owner: dict[tuple, int] = {}  # cases with the same study run share it: the first runs it
    for i, case in enumerate(cases):
        owner.setdefault(_study_key(case), i)
    study: dict[tuple, list[dict]] = {key: [] for key in owner}
    ours: list[list[dict]] = [[] for _ in cases]
    for round_ in range(1, args.e2e_rounds + 1):
        for i, case in enumerate(cases):
            extra = " " + " ".join(case["extra"]) if case["extra"] else ""
            tag = f"[e2e] {case['model']} b{case['batch']}{extra} round {round_}"
            if owner[_study_key(case)] == i:
                m = e2e_study(args, root, device, case, epochs, work)
                study[_study_key(case)].append(m)
                print(f"{tag} study loop: {_e2e_str(m)}", flush=True)
            m = e2e_fruitnet(args, root, device, case, epochs, work)
            ours[i].append(m)
            print(f"{tag} fruitnet.train: {_e2e_str(m)}", flush=True)
    return [
        e2e_row(args, device, case, study[_study_key(case)], runs)
        for case, runs in zip(cases, ours, strict=True)
    ]


def e2e_row(args, device, case: dict, study: list[dict], ours: list[dict]) -> dict:
    """One table row: the medians over the rounds of both sides, and their ratio."""
    med = {side: {k: statistics.median(m[k] for m in runs) for k in runs[0]}
           for side, runs in (("study", study), ("fruitnet", ours))}  # fmt: skip
    extra = case["extra"]
    precision = next((x.split("=", 1)[1] for x in extra if "precision=" in x), None)
    return {
        "model": case["model"], "batch": case["batch"], "limit": case["limit"], "extra": extra,
        "target": case["target"],
        "precision": precision or str(resolve_precision("auto", accelerator(device))),
        "study": med["study"], "fruitnet": med["fruitnet"],
        "ratio": med["fruitnet"]["images_per_s"] / med["study"]["images_per_s"],
        "round_ratios": [f["images_per_s"] / s["images_per_s"]
                         for f, s in zip(ours, study, strict=False)],
        "command": e2e_command(f"<{DATASET}>", device, case, args.e2e_epochs, args.quick),
    }  # fmt: skip


def _e2e_str(m: dict) -> str:
    return (
        f"fit start {m['fit_start_s']:5.1f} s, first step {m['first_step_s']:5.1f} s, "
        f"epoch 1 {m['epoch1_s']:5.1f} s, epoch {m['epoch_s']:5.1f} s (val {m['val_s']:.1f} s), "
        f"{m['images_per_s']:6.1f} img/s, process {m['wall_s']:.0f} s"
    )
