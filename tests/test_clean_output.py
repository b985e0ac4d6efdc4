"""What a user reads: a fresh `python -m fruitnet.train` prints fruitnet's lines, the summary and
the progress, and no warning that is not about the run; a bad value is one line, no traceback;
`python -m fruitnet.eval ckpt_path=...` finds the training run's data by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import compose_cfg, read_results, train
from hydra.errors import InstantiationException
from rich.console import Console
from rich.progress import Progress, TextColumn

from fruitnet.callbacks.progress import CompactRichProgressBar, _no_wrap
from fruitnet.config import error_line, run_entry

# 10 classes x 30 images at 32 px, batch 16: 17 steps an epoch (more than log_every_n_steps, so
# Lightning has nothing to say about the logging interval), a few seconds on two cores.
SMALL = [
    "trainer=cpu",
    "data=synthetic",
    "data.train_per_class=30",
    "data.test_per_class=6",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "callbacks.model_size.latency=false",
]
# Each line of the issue, as the user saw it.
NOISE = [
    "without a model",  # .fit(ckpt_path=None) with Lightning's OnExceptionCheckpoint
    "no last checkpoint available",  # ... and what followed it
    "LeafSpec",  # Lightning 2.6 on torch 2.14
    "Total FLOPs: 0",  # Lightning's summary without an example input
    "weights_only",  # "`weights_only` was not set, defaulting to `False`"
    "is not supported by the model summary",  # bf16-mixed and the summary's size estimate
    "Tip:",  # Lightning's litlogger advert
    "Trainer already configured with model summary callbacks",
    "Traceback",
]


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "80"}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order, like a terminal
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout


def assert_clean(output: str) -> None:
    for text in NOISE:
        assert text not in output, f"{text!r} in the output:\n{output[-4000:]}"
    # No third-party warning at all: they print the file they come from.
    leaked = [line for line in output.splitlines() if "site-packages" in line]
    assert not leaked, "\n".join(leaked)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("fresh")
    run_dir = base / "run"
    rc, out = run_cli(
        "fruitnet.train", *SMALL, "trainer.max_epochs=1",
        f"paths.root_dir={base}", f"paths.data_dir={base / 'data'}", f"hydra.run.dir={run_dir}",
        cwd=base,
    )  # fmt: skip
    assert rc == 0, out[-4000:]
    return SimpleNamespace(base=base, run_dir=run_dir, output=out, results=read_results(run_dir))


def test_a_fresh_run_prints_no_warning_that_is_not_about_the_run(fresh):
    out = fresh.output
    assert_clean(out)
    # ... and still what the user wants to see: the summary, one FLOPs figure, progress, result.
    assert "BasicCNN" in out and "Total params" in out
    assert "MulticlassAccuracy" not in out, "metric modules listed in the summary"
    assert out.count("FLOPs") == 1 and "GFLOPs at 32x32" in out
    assert "epoch 1/1: train loss" in out  # the progress line of a non-terminal stdout
    assert "test accuracy" in out
    assert fresh.results["resumed_from"] is None


def test_eval_without_data_evaluates_on_the_training_runs_data(fresh, tmp_path):
    out_dir = tmp_path / "eval"
    rc, out = run_cli(
        "fruitnet.eval", f"ckpt_path={fresh.results['best_ckpt']}", "trainer=cpu",
        "data.num_workers=0", "verbose=false", "explain=false",
        f"paths.root_dir={tmp_path}", f"hydra.run.dir={out_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert rc == 0, out[-4000:]
    assert "evaluating on the training run's data=synthetic" in out
    assert_clean(out)
    results = read_results(out_dir)
    assert results["data"] == "synthetic"
    # training records data.root (for synthetic data, the parent of the generated folder)
    assert Path(results["data_root"]).is_relative_to(fresh.results["data_root"])
    assert results["num_test"] == 60
    assert abs(results["test_acc"] - fresh.results["test_acc"]) <= 1e-6


def test_a_negative_learning_rate_is_one_line_without_a_traceback(tmp_path):
    args = [*SMALL, "optimizer.lr=-1", f"paths.root_dir={tmp_path}"]
    rc, out = run_cli("fruitnet.train", *args, cwd=tmp_path)
    assert rc == 1, out[-3000:]
    lines = [line for line in out.splitlines() if "optimizer.lr" in line]
    assert len(lines) == 1, out
    assert "fruitnet: optimizer.lr must be a number >= 0, got -1" in lines[0]
    assert "Traceback" not in out and "Error executing job" not in out
    # Stopped before the data was scanned and before a checkpoint could be written.
    assert "data: " not in out
    assert not list(tmp_path.rglob("*.ckpt"))


def test_hydra_full_error_lets_the_exception_through(tmp_path, monkeypatch):
    """HYDRA_FULL_ERROR=1: the error propagates, so Hydra prints the whole traceback."""
    from fruitnet.train import run

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    cfg = compose_cfg([*SMALL, "optimizer.lr=-1"], tmp_path)
    with pytest.raises(ValueError, match="optimizer.lr must be a number >= 0, got -1"):
        run_entry(run, cfg)


def test_a_bad_override_is_hydras_message_without_a_traceback(tmp_path):
    rc, out = run_cli("fruitnet.train", "trainer.max_epoch=1", cwd=tmp_path)
    assert rc == 1
    assert "Could not override 'trainer.max_epoch'" in out
    assert "Traceback" not in out


def test_error_lines_say_what_is_wrong():
    assert error_line(ValueError("batch_size must be >= 1, got 0")) == (
        "batch_size must be >= 1, got 0"
    )
    assert error_line(KeyError("model")) == "KeyError: 'model'"
    assert error_line(TypeError("bad")) == "TypeError: bad (HYDRA_FULL_ERROR=1 shows the traceback)"
    try:
        try:
            raise ValueError("val_fraction must be in [0, 1), got 2.0")
        except ValueError as cause:
            raise InstantiationException("Error in call to target 'x':\nValueError(...)") from cause
    except InstantiationException as err:
        assert error_line(err) == "val_fraction must be in [0, 1), got 2.0"


def test_a_second_run_in_the_same_directory_without_ckpt_path_starts_fresh(tmp_path, data_dir):
    """Lightning's OnExceptionCheckpoint turned `fit(ckpt_path=None)` into "resume the last
    checkpoint": a rerun in the same run directory would silently continue the old run."""
    first = train(
        ["data=synthetic", "data.image_size=32", "trainer.max_epochs=1"], tmp_path, data_dir
    )
    second = train(
        ["data=synthetic", "data.image_size=32", "trainer.max_epochs=1"], tmp_path, data_dir
    )
    assert second["resumed_from"] is None
    assert second["global_step"] == first["global_step"] > 0


def test_the_progress_bar_stays_on_one_line_in_80_columns():
    bar = CompactRichProgressBar()
    metrics = TextColumn("loss: 0.711 val_acc: 0.917")
    for width in (80, 60):
        console = Console(width=width, file=open(os.devnull, "w"))  # noqa: SIM115
        progress = Progress(
            *bar.configure_columns(trainer=None), _no_wrap(metrics), console=console
        )
        task = progress.add_task("Validation", total=3830)
        progress.update(task, completed=1234)
        with console.capture() as cap:
            console.print(progress.make_tasks_table(progress.tasks))
        lines = cap.get().rstrip("\n").splitlines()
        assert len(lines) == 1, lines
        if width == 80:
            assert "1234/3830" in lines[0] and "val_acc: 0.917" in lines[0]


def test_the_progress_bar_shows_the_loss_and_the_val_accuracy_only():
    bar = CompactRichProgressBar()
    logged = {
        "train/loss_step": 0.61, "train/loss_epoch": 0.99, "train/acc": 0.6,
        "val/loss": 0.45, "val/acc": 0.95, "val/acc_best": 0.95,
    }  # fmt: skip
    trainer = SimpleNamespace(progress_bar_metrics=logged, loggers=[])
    assert bar.get_metrics(trainer, None) == {"loss": 0.61, "val_acc": 0.95}


def test_model_summary_null_means_no_summary(tmp_path):
    """Lightning adds its own summary (FLOPs 0 and all) when the config drops fruitnet's."""
    from lightning.pytorch.callbacks import ModelSummary

    from fruitnet.assemble import build_trainer
    from fruitnet.config import instantiate_group

    for drop, expected in (([], True), (["callbacks.model_summary=null"], False)):
        cfg = compose_cfg(["trainer=cpu", *drop], tmp_path)
        trainer = build_trainer(cfg, instantiate_group(cfg.callbacks), [])
        assert any(isinstance(cb, ModelSummary) for cb in trainer.callbacks) is expected
