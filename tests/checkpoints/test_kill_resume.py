"""Interrupted runs, as a user would interrupt them: `python -m fruitnet.train` in a subprocess.

- SIGKILL mid-epoch (no chance to save anything): `ckpt_path=last` resumes from the last periodic
  checkpoint, and with `trainer.deterministic=true` ends with the same metrics and the same
  weights as an uninterrupted run of the same config.
- SIGTERM / Ctrl-C (SIGINT): Lightning's signal handling plus `InterruptCheckpoint` save a
  checkpoint before the process exits, and the run resumes from it.

Tiny synthetic data (3 classes, 32 px) so one run takes seconds. The uninterrupted baseline and
the run that gets killed start together (two cores), the resume follows the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY_DATA, read_results

from fruitnet.checkpoints import load_checkpoint, newest_checkpoint
from fruitnet.data import generate_synthetic_fruits

# 3 classes x 30 training images, 10 % carved for val -> 81 training images; batch 4 with
# drop_last -> 20 steps per epoch; a periodic checkpoint every 3 steps, so none falls on an epoch
# boundary (steps 3, 6, ... 18, 21, ... 39).
STEPS_PER_EPOCH = 20
MAX_EPOCHS = 2
TINY = [
    "trainer=cpu",
    *(f"data.{k}={v}" for k, v in TINY_DATA.items()),
    "data.batch_size=4",
    "data.num_workers=0",
    f"trainer.max_epochs={MAX_EPOCHS}",
    "trainer.deterministic=true",
    "trainer.precision=32-true",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    # No monitor: the kept ("best") checkpoint is the newest, i.e. the final weights, so test_acc
    # depends on every step trained after the resume (with val/acc as monitor it could be a
    # checkpoint written before the kill, and the comparison would prove nothing).
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.model_size.latency=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "++trainer.enable_progress_bar=false",
]
RUN_TIMEOUT_S = 240
# The run to be interrupted sleeps this long after each step (see Pace), so the kill lands a few
# steps after the first checkpoint even when this test process is scheduled late on a busy machine.
PACE_S = 0.1
PACE = [
    "+callbacks.pace._target_=helpers.Pace",
    f"+callbacks.pace.seconds={PACE_S}",
]


def _generate(data_dir: Path) -> None:
    # Once, here: the concurrent runs below would otherwise race to generate the same tree.
    generate_synthetic_fruits(data_dir / "synthetic", **TINY_DATA, seed=0)


def _start(run_dir: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / f"{run_dir.name}.{time.monotonic_ns()}.out"
    # tests/ on the path: the subprocess imports Pace from tests/helpers.py.
    path = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FRUITNET_OFFLINE": "1", "PYTHONPATH": path}
    cmd = [
        sys.executable,
        "-m",
        "fruitnet.train",
        *TINY,
        f"paths.root_dir={run_dir.parent}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    with open(log_path, "w") as out:  # the child keeps its own copy of the descriptor
        # SIGINT back to its default: a test run started in the background (`make test-slow &`)
        # inherits it ignored, and Python then installs no KeyboardInterrupt for Ctrl-C.
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def _finish(proc: subprocess.Popen) -> str:
    proc.wait(timeout=RUN_TIMEOUT_S)
    text = _output(proc)
    assert proc.returncode == 0, f"run failed (rc {proc.returncode}):\n{text[-4000:]}"
    return text


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.ckpt"))


def _wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path) -> list[Path]:
    """Poll until the run has written a checkpoint (the atomic writer only ever shows whole files
    under *.ckpt); fails if the run ends first."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _checkpoints(run_dir)
        if found:
            return found
        assert proc.poll() is None, f"run ended before any checkpoint:\n{_output(proc)[-4000:]}"
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint in {run_dir} after {RUN_TIMEOUT_S} s")


def _final_weights(results: dict) -> dict[str, torch.Tensor]:
    path = results["best_ckpt"] or results["last_ckpt"]
    assert path, results
    return load_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def kill_and_resume(tmp_path_factory, data_dir):
    """Uninterrupted run A; run B killed with SIGKILL right after its first (mid-epoch)
    checkpoint, then resumed with `ckpt_path=last` in the same run directory."""
    _generate(data_dir)
    base = tmp_path_factory.mktemp("kill")
    dir_a, dir_b = base / "uninterrupted", base / "killed"
    run_a = _start(dir_a, data_dir)
    run_b = _start(dir_b, data_dir, *PACE)
    try:
        _wait_for_checkpoint(run_b, dir_b)
        time.sleep(1.5 * PACE_S)  # past the checkpoint: the steps after it are lost
        run_b.send_signal(signal.SIGKILL)
        run_b.wait(timeout=30)
        # What `ckpt_path=last` will pick, read now: the resumed run overwrites last.ckpt.
        point = newest_checkpoint(dir_b / "checkpoints")
        killed = {
            "rc": run_b.returncode,
            "results_after_kill": (dir_b / "results.json").exists(),
            "resume_point": str(point),
            "resume_step": load_checkpoint(point)["global_step"],
        }
        resume = _start(dir_b, data_dir, "ckpt_path=last")
        _finish(resume)
        _finish(run_a)
    finally:
        for p in (run_a, run_b):
            if p.poll() is None:
                p.kill()
    return read_results(dir_a), read_results(dir_b), killed


def test_sigkill_mid_epoch_then_ckpt_path_last_resumes_from_the_last_checkpoint(kill_and_resume):
    base, resumed, killed = kill_and_resume
    assert killed["rc"] == -signal.SIGKILL
    assert not killed["results_after_kill"], "the run finished before it was killed"
    # Resumed from the newest checkpoint of the killed run, written in the middle of an epoch.
    assert resumed["resumed_from"] == killed["resume_point"]
    assert Path(killed["resume_point"]).parent == Path(resumed["run_dir"]) / "checkpoints"
    step = killed["resume_step"]
    assert 0 < step < STEPS_PER_EPOCH * MAX_EPOCHS
    assert step % STEPS_PER_EPOCH != 0, f"not a mid-epoch checkpoint (step {step})"
    # ... and it trained exactly the remaining steps, no more, no fewer.
    assert base["global_step"] == STEPS_PER_EPOCH * MAX_EPOCHS
    assert resumed["global_step"] == base["global_step"]
    assert resumed["epochs"] == base["epochs"] == MAX_EPOCHS
    assert resumed["test_acc"] is not None and resumed["val_acc"] is not None


def test_resumed_run_matches_an_uninterrupted_one_exactly(kill_and_resume):
    """Needs the data order of an epoch to depend on (seed, epoch) only and a mid-epoch resume to
    skip the batches already trained (stateful train loader), plus the RNG states in the
    checkpoint (fruitnet.callbacks.RNGStateCheckpoint) for dropout."""
    base, resumed, _ = kill_and_resume
    keys = ["global_step", "epochs", "val_acc", "test_acc", "test_loss", "confusion_matrix"]
    assert {k: resumed[k] for k in keys} == {k: base[k] for k in keys}
    w_base, w_resumed = _final_weights(base), _final_weights(resumed)
    assert w_base.keys() == w_resumed.keys()
    differing = [k for k in w_base if not torch.equal(w_base[k], w_resumed[k])]
    assert not differing, f"final weights differ in {differing}"


def _interrupt_and_resume(sig: signal.Signals, run_dir: Path, data_dir: Path) -> dict:
    """Send `sig` a little after the run's first checkpoint, check what it left, resume it."""
    _generate(data_dir)
    proc = _start(run_dir, data_dir, *PACE)
    try:
        _wait_for_checkpoint(proc, run_dir)
        time.sleep(1.5 * PACE_S)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = _output(proc)
    assert proc.returncode != 0, f"an interrupted run must not exit 0:\n{out[-3000:]}"
    assert not (run_dir / "results.json").exists()
    saved = run_dir / "checkpoints" / "on_exception.ckpt"
    assert saved.is_file(), f"no checkpoint saved on {sig.name}:\n{out[-3000:]}"
    ckpt = load_checkpoint(saved)  # a whole, weights_only-loadable checkpoint
    assert 0 < ckpt["global_step"] < STEPS_PER_EPOCH * MAX_EPOCHS
    # The newest checkpoint, so `ckpt_path=last` picks it.
    assert newest_checkpoint(run_dir / "checkpoints") == saved

    _finish(_start(run_dir, data_dir, "ckpt_path=last"))
    resumed = read_results(run_dir)
    assert resumed["resumed_from"] == str(saved)
    assert resumed["global_step"] == STEPS_PER_EPOCH * MAX_EPOCHS
    assert resumed["epochs"] == MAX_EPOCHS
    assert resumed["test_acc"] is not None
    return {"rc": proc.returncode, "output": out, "results": resumed}


@pytest.fixture(scope="module")
def sigterm_and_resume(tmp_path_factory, data_dir):
    return _interrupt_and_resume(
        signal.SIGTERM, tmp_path_factory.mktemp("sigterm") / "run", data_dir
    )


def test_sigterm_saves_a_checkpoint_exits_143_then_resumes(sigterm_and_resume):
    # Lightning itself ends a SIGTERM'd fit with SystemExit() = status 0; fruitnet.train exits
    # 128 + 15 like a process killed by the signal, with a line saying how to resume.
    assert sigterm_and_resume["rc"] == 128 + signal.SIGTERM, sigterm_and_resume["output"][-3000:]
    assert (
        "stopped by SIGTERM before the run finished; resume with ckpt_path=last"
        in (sigterm_and_resume["output"])
    )


def test_sigterm_prints_no_lightning_notes(sigterm_and_resume):
    """The on-exception save says weights_only=False itself (a full resume point); Lightning
    logged "`weights_only` was not set, defaulting to `False`" when it was left unset."""
    out = sigterm_and_resume["output"]
    for text in ("weights_only", "without a model", "Total FLOPs", "Traceback"):
        assert text not in out, out[-3000:]


def test_sigterm_resume_matches_an_uninterrupted_run(sigterm_and_resume, kill_and_resume):
    """Lightning stops on SIGTERM between two steps, so the resumed run is exact as well."""
    base, resumed = kill_and_resume[0], sigterm_and_resume["results"]
    keys = ["global_step", "val_acc", "test_acc", "test_loss", "confusion_matrix"]
    assert {k: resumed[k] for k in keys} == {k: base[k] for k in keys}


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_then_resumes(tmp_path, data_dir):
    # Ctrl-C can land inside a step: Lightning then repeats that step on resume (its dropout
    # draws differ), so only the checkpoint, the exit status and the step count are checked.
    assert _interrupt_and_resume(signal.SIGINT, tmp_path / "run", data_dir)["rc"] == 1
