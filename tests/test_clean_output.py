"""What a user reads: a fresh `python -m fruitnet.train` prints fruitnet's lines, the summary and
the progress, and no warning that is not about the run; a bad value is one line, no traceback;
`python -m fruitnet.eval ckpt_path=...` finds the training run's data by itself."""

from __future__ import annotations

import logging
import os
import re
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


# A warning printed by a library, in each form one takes: Python's `file.py:NNN: SomeWarning:
# message` (or Lightning's rank-zero `file.py:NNN: message`), and the source line under it.
LIBRARY_WARNING = (re.compile(r"\S+\.py:\d+: "), re.compile(r"^\s*warnings\.warn\("))


def library_warnings(output: str) -> list[str]:
    return [
        line for line in output.splitlines() if any(form.search(line) for form in LIBRARY_WARNING)
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
    leaked += library_warnings(output)
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


# The real sample sets, one short run each: 1 epoch of 2 batches (fewer than the logging interval),
# every split, a sample set smaller than the batch size (chest_xray), and 64 loader workers.
SAMPLE_RUN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.model_size.latency=false",
]


@pytest.mark.slow  # two runs of ~12 s each on a 2-core CPU; the fresh run above is the fast check
@pytest.mark.parametrize(
    ("preset", "folder", "extra"),
    [
        ("fruits", "fruits-360-sample", []),
        ("chest_xray", "chest_xray-sample", ["data.num_workers=64", "data.image_size=64"]),
    ],
)
def test_a_sample_set_run_prints_no_library_warning(preset, folder, extra, shared_data, tmp_path):
    rc, out = run_cli(
        "fruitnet.train", *SAMPLE_RUN, f"data={preset}", f"data.root={shared_data / folder}",
        *extra, f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert rc == 0, out[-4000:]
    assert "test accuracy" in out
    assert_clean(out)
    assert not library_warnings(out), "\n".join(library_warnings(out))
    # What Lightning and torch said is said once, by fruitnet, or made moot.
    assert "smaller than the logging interval" not in out
    assert "training steps are logged once an epoch: an epoch has " in out
    assert "worker processes in total" not in out
    if extra:
        from fruitnet.data.host import usable_cpus

        cpus = usable_cpus()
        assert cpus >= 64 or out.count(f"data.num_workers=64 is more than the {cpus} CPU(s)") == 1


def test_an_epoch_shorter_than_the_logging_interval_logs_its_steps_without_a_warning(
    tmp_path, data_dir
):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train(
            ["data=synthetic", "data.image_size=32", "trainer.max_epochs=2",
             "trainer.limit_train_batches=2", "trainer.log_every_n_steps=10"],
            tmp_path,
            data_dir,
        )  # fmt: skip
    assert results["global_step"] == 4
    said = [str(w.message) for w in caught if "logging interval" in str(w.message)]
    assert not said, said
    # Every 2 steps (the epoch's batches) instead of every 10: 4 steps, 2 rows of step values.
    rows = next(tmp_path.rglob("metrics.csv")).read_text().splitlines()
    header = rows[0].split(",")
    steps = [r.split(",") for r in rows[1:]]
    step_rows = [r for r in steps if r[header.index("train/loss_step")]]
    assert [int(r[header.index("step")]) for r in step_rows] == [1, 3]


def test_library_warnings_are_recognised_in_each_form_they_print_in():
    lines = [
        "/v/site-packages/lightning/pytorch/loops/fit_loop.py:321: The number of training batches "
        "(2) is smaller than the logging interval Trainer(log_every_n_steps=10).",
        "/v/site-packages/torch/utils/data/dataloader.py:431: UserWarning: This DataLoader will "
        "create 64 worker processes in total.",
        "C:\\v\\Lib\\site-packages\\PIL\\Image.py:3593: DecompressionBombWarning: Image size",
        "  warnings.warn(",
    ]
    ours = [
        "[2026-01-01 10:00:00,000][fruitnet.data.host][WARNING] - data.num_workers=64 is more "
        "than the 2 CPU(s) this process may use: using 2 loader workers",
        "epoch 1/1: train loss 0.6935, val acc 0.5000, 46 img/s, 1.6 s",
    ]
    assert library_warnings("\n".join(lines + ours)) == lines


def test_fruitnets_own_warnings_are_log_lines_of_the_module_that_warns(caplog):
    import warnings

    from fruitnet.console import quiet_third_party
    from fruitnet.data import DataWarning
    from fruitnet.data.scan import stratified_split

    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        quiet_third_party()
        stratified_split([0, 0, 1], [0.5, 0.5])  # class 1 has a single image: a DataWarning
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
    # (its stacklevel points at this test, so the line is the package logger's)
    ours = [r for r in caplog.records if r.name == "fruitnet"]
    assert len(ours) == 1 and "1 class(es) have a single image" in ours[0].getMessage()
    assert ours[0].levelno == logging.WARNING
    assert not any("library's warning" in r.getMessage() for r in caplog.records)
    assert issubclass(DataWarning, UserWarning)


def test_a_bad_trainer_count_is_one_fruitnet_line(tmp_path):
    rc, out = run_cli(
        "fruitnet.train", *SMALL, "trainer.max_epochs=-3", f"paths.root_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert rc == 1, out[-3000:]
    assert "MisconfigurationException" not in out and "Traceback" not in out
    lines = [line for line in out.splitlines() if "max_epochs" in line]
    assert len(lines) == 1, out
    expected = "fruitnet: trainer.max_epochs must be an integer >= -1 (-1: no limit), got -3"
    assert expected in lines[0]
    assert "data: " not in out  # said before the data is read


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


@pytest.mark.parametrize(
    ("entry", "arg", "hint"),
    [
        ("train", "seeed=3", "did you mean seed?"),
        ("eval", "ckpt=last.ckpt", "did you mean ckpt_path?"),
        ("export", "fromat=onnx", "did you mean format?"),
        ("search", "serch.target_latency_ms=4", "did you mean search?"),
    ],
)
def test_a_mistyped_key_asks_did_you_mean(entry, arg, hint, capsys):
    from fruitnet.config import check_keys

    with pytest.raises(SystemExit) as stop:
        check_keys([arg], entry)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == f"fruitnet: unknown key {arg.split('=')[0].split('.')[0]!r} in {arg!r}: {hint}"
    # known keys, groups, new (+) and removed (~) keys and flags pass on to Hydra
    check_keys(["-m", "+extra=1", "~tags", "hydra.run.dir=y", "task_name=x"], entry)
