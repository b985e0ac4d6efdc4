"""Bad configs, bad checkpoints and what goes wrong during a run (non-finite loss, full disk,
concurrent runs): the second half of the issue table whose first half, the data, is in
tests/test_bad_inputs.py. Each test asserts the message a user sees (naming the key or file at
fault) or the outcome."""

from __future__ import annotations

import ast
import errno
import os
import re
import signal
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from helpers import ONE_EPOCH, REPO, TINY, cli, compose_cfg, jpeg_folders, read_results, train
from hydra.errors import ConfigCompositionException, MissingConfigException

from fruitnet.callbacks import NonFiniteLossError
from fruitnet.checkpoints import CheckpointError, load_checkpoint
from fruitnet.data import (
    DataWarning,
)
from fruitnet.models import WeightsFileError
from fruitnet.module import ClassifierModule

# --------------------------------------------------------------------------- config names


@pytest.mark.parametrize(
    ("override", "options"),
    [
        ("model=foo", ["cnn", "proxyless", "resnet50"]),
        ("data=foo", ["chest_xray", "folder", "fruits", "synthetic"]),
        ("optimizer=foo", ["adam", "adamw", "sgd"]),
    ],
)
def test_unknown_group_option_lists_the_valid_ones(override, options, tmp_path):
    group = override.split("=")[0]
    with pytest.raises(MissingConfigException) as info:
        compose_cfg([override], tmp_path)
    msg = str(info.value)
    assert f"Could not find '{group}/foo'" in msg
    assert f"Available options in '{group}':" in msg
    listed = msg.split(f"Available options in '{group}':")[1].split("Config search path")[0].split()
    assert set(options) <= set(listed), listed


def test_typo_in_a_key_names_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["trainer.max_epoch=1"], tmp_path)
    assert "Could not override 'trainer.max_epoch'" in str(info.value)
    assert "Key 'max_epoch' is not in struct" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=-3", "trainer.max_epochs must be an integer >= -1 (-1: no limit), got -3"),
        ("trainer.max_steps=-2", "trainer.max_steps must be an integer >= -1 (-1: no limit), got -2"),
        ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps must be an integer >= 0"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer >= 1"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs must be an integer >= -1 (-1: no limit), got 2.5"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be a number of batches"),
        ("trainer.limit_val_batches=-1", "trainer.limit_val_batches must be a number of batches"),
    ],
)  # fmt: skip
def test_a_bad_trainer_count_is_refused_before_the_data_is_read(override, message, tmp_path):
    from fruitnet.config import check_config

    with pytest.raises(ValueError, match=re.escape(message)):
        check_config(compose_cfg([override], tmp_path))
    fine = ["trainer.max_epochs=-1", "trainer.limit_train_batches=0.5"]
    check_config(compose_cfg(fine, tmp_path))


def test_norm_must_be_a_boolean(tmp_path):
    cfg = compose_cfg(["norm=maybe"], tmp_path)
    assert cfg.norm == "maybe"  # Hydra takes it as a string: train.run has to refuse it
    with pytest.raises(ValueError, match=r"norm must be true or false, got 'maybe'"):
        train(["norm=maybe"], tmp_path)


def test_unknown_model_on_the_command_line_is_readable(tmp_path):
    proc = cli("-m", "fruitnet.train", "model=foo", f"paths.root_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert "Could not find 'model/foo'" in err, err[-3000:]
    for name in ("cnn", "proxyless", "resnet50"):
        assert f"\t{name}\n" in err
    assert "Traceback" not in err  # one message, not a stack trace


# --------------------------------------------------------------------------- model input size


def test_cnn_with_norm_true_takes_224_px_and_sizes_its_flatten_layer(tmp_path, tiny_data):
    results = train(
        [*TINY, "model=cnn", "norm=true", "++trainer.fast_dev_run=true"], tmp_path, tiny_data
    )
    assert results["input_size"] == 224 and results["norm"] is True
    # 4 conv stages (3->16->32->64->128), 224 / 2**4 = 14 -> flatten 128 * 14 * 14 = 25088.
    convs = sum(9 * i * o + o for i, o in [(3, 16), (16, 32), (32, 64), (64, 128)])
    assert results["params"] == convs + (25088 * 625 + 625) + (625 * 3 + 3)
    assert 0.0 <= results["test_acc"] <= 1.0


# --------------------------------------------------------------------------- batch size, val split


def test_batch_size_larger_than_the_dataset_warns_and_trains(tmp_path, tiny_data):
    with pytest.warns(DataWarning, match=r"batch_size=1000 is larger than the train split"):
        results = train([*ONE_EPOCH, "data.batch_size=1000"], tmp_path, tiny_data)
    assert results["global_step"] == 1  # one (partial) batch, not zero
    assert results["test_acc"] is not None and results["val_acc"] is not None


@pytest.mark.parametrize("case", ["single_image_class", "no_val_at_all"])
def test_a_class_without_val_images_warns_and_trains(case, tmp_path, tiny_data):
    counts = {"Training/a": 6, "Training/b": 6, "Training/c": 6, "Test/a": 2, "Test/b": 2,
              "Test/c": 2}  # fmt: skip
    extra = []
    if case == "single_image_class":
        counts["Training/c"] = 1
        match = "single image, kept in training only"
    else:
        extra = ["data.val_fraction=0.0"]
        match = None
    root = jpeg_folders(tmp_path / "ds", counts)
    overrides = ["data=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                 "trainer.max_epochs=1", *extra]  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        results = train(overrides, tmp_path / "run", tiny_data)
    if match:
        assert any(match in str(w.message) for w in record), [str(w.message) for w in record]
    assert results["num_classes"] == 3 and results["class_names"] == ["a", "b", "c"]
    assert results["test_acc"] is not None and results["global_step"] >= 1


# --------------------------------------------------------------------------- NaN / inf loss


@pytest.mark.parametrize("monitor", ["val/acc", "null"], ids=["default_monitor", "no_monitor"])
def test_non_finite_loss_stops_naming_the_step_and_the_last_good_checkpoint(
    monitor, monkeypatch, tmp_path, tiny_data
):
    """NaN from step 5 on; a checkpoint every 2 steps. With the default model_checkpoint
    (monitor=val/acc) Lightning defers every periodic save, last.ckpt included, until the first
    validation, so a first-epoch failure has no checkpoint to name: see the report / conf fix."""
    step = ClassifierModule._step

    def poisoned(self, batch):
        loss, logits, y = step(self, batch)
        if self.training and self.trainer.global_step >= 5:
            loss = loss * float("nan")
        return loss, logits, y

    monkeypatch.setattr(ClassifierModule, "_step", poisoned)
    overrides = [
        *ONE_EPOCH,
        "data.batch_size=4",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"callbacks.model_checkpoint.monitor={monitor}",
    ]
    with pytest.raises(NonFiniteLossError) as info:
        train(overrides, tmp_path, tiny_data)
    msg = str(info.value)
    assert "training loss is nan at global step 5 (epoch 0)" in msg, msg
    found = re.search(r"last good checkpoint: (\S+) \(resume with ckpt_path=", msg)
    assert found, msg
    good = Path(found.group(1))
    assert good.parent == tmp_path / "checkpoints"
    ckpt = load_checkpoint(good)
    assert ckpt["global_step"] == 4  # the newest periodic checkpoint before the bad step
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_huge_learning_rate_is_stopped_by_the_guard(tmp_path, tiny_data):
    with pytest.raises(NonFiniteLossError, match=r"training loss is (nan|inf|-inf) at global step"):
        train(
            [*TINY, "trainer.max_epochs=3", "data.batch_size=4", "optimizer=sgd",
             "optimizer.lr=1e10"],
            tmp_path,
            tiny_data,
        )  # fmt: skip


# --------------------------------------------------------------------------- checkpoint files


def _real_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}, "global_step": 1}, path)
    return path


def _broken(path: Path, kind: str) -> Path:
    if kind == "truncated":
        data = _real_checkpoint(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    else:  # a valid torch file that holds a tensor, not a checkpoint dict
        torch.save(torch.ones(3), path)
    return path


KEYS = ["ckpt_path", "init_from", "model.weights"]


@pytest.mark.parametrize("kind", ["truncated", "text", "tensor"])
@pytest.mark.parametrize("key", KEYS)
def test_bad_checkpoint_file_is_a_clear_error_naming_it(key, kind, tmp_path, tiny_data):
    path = _broken(tmp_path / f"bad-{kind}.ckpt", kind)
    run_dir = tmp_path / "run"
    with pytest.raises((CheckpointError, WeightsFileError)) as info:
        train([*ONE_EPOCH, f"{key}={path}"], run_dir, tiny_data)
    msg = str(info.value)
    assert str(path) in msg, msg
    reason = {"truncated": ("truncated", "cannot load", "could not be read"),
              "text": ("cannot load", "could not be read", "not a PyTorch"),
              "tensor": ("not a checkpoint", "expected a state_dict")}[kind]  # fmt: skip
    assert any(r in msg for r in reason), msg
    assert not (run_dir / "checkpoints").exists()  # failed before any training


class _Payload:
    """Pickles into `os.system("touch <marker>")`: runs the command if ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("key", KEYS)
def test_checkpoint_with_pickled_code_is_refused_unexecuted(key, tmp_path, tiny_data):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 1, "x": _Payload(marker)}, path)
    with pytest.raises((CheckpointError, WeightsFileError)) as info:
        train([*ONE_EPOCH, f"{key}={path}"], tmp_path / "run", tiny_data)
    msg = str(info.value)
    assert str(path) in msg and "pickled Python objects" in msg, msg
    assert not marker.exists(), "the pickled payload was executed"


def _package_sources() -> list[Path]:
    files = sorted((REPO / "fruitnet").rglob("*.py"))
    assert len(files) > 10
    return files


def test_package_never_loads_pickles_or_hub_code():
    """Every torch.load passes weights_only=True; nothing passes weights_only=False; no
    torch.hub.load (which runs a repository's hubconf.py), no pickle.load(s)."""
    problems = []
    for path in _package_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno}: {name}"
            kw = {k.arg: k.value for k in node.keywords}
            # Trainer.save_checkpoint's weights_only says what to save (False: a full resume
            # point), not how to load: it unpickles nothing.
            saving = name.endswith("save_checkpoint")
            if (
                "weights_only" in kw
                and not saving
                and not (
                    isinstance(kw["weights_only"], ast.Constant)
                    and kw["weights_only"].value is True
                )
            ):
                problems.append(f"{where}(weights_only={ast.unparse(kw['weights_only'])})")
            if name.endswith("torch.load") and "weights_only" not in kw:
                problems.append(f"{where} without weights_only=True")
            if name.endswith(("hub.load", "hub.load_state_dict_from_url")):
                problems.append(where)
            if name in ("pickle.load", "pickle.loads", "dill.load", "cloudpickle.load"):
                problems.append(where)
            if name.endswith("load") and kw.get("allow_pickle") is not None:
                value = kw["allow_pickle"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}(allow_pickle={ast.unparse(value)})")
    assert not problems, "\n".join(problems)
    # The same as text, for code built in strings or hidden from the AST walk above.
    for path in _package_sources():
        text = path.read_text()
        for line in text.splitlines():
            assert "weights_only=False" not in line or "save_checkpoint(" in line, (path, line)
        assert "trust_repo" not in text, path


# --------------------------------------------------------------------------- disk full


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS], ids=["disk_full", "read_only"])
def test_failed_checkpoint_write_is_clear_and_keeps_the_previous_one(
    err, monkeypatch, tmp_path, tiny_data
):
    real_save = torch.save
    calls = []

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # files only: in-memory saves (size probes) pass
            calls.append(Path(f))
            if len(calls) >= 2:  # the first checkpoint gets written, then the disk is full
                raise OSError(err, os.strerror(err))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    overrides = [
        *ONE_EPOCH,
        "data.batch_size=4",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.monitor=null",
    ]
    with pytest.raises(CheckpointError) as info:
        train(overrides, tmp_path, tiny_data)
    monkeypatch.undo()

    # The failed periodic save (and InterruptCheckpoint's attempt after it) name their file.
    ckpt_dir = tmp_path / "checkpoints"
    messages = [str(e) for e in _chain(info.value) if isinstance(e, CheckpointError)]
    assert messages and all("could not write checkpoint" in m for m in messages), messages
    assert all(os.strerror(err) in m for m in messages), messages
    assert all("previous checkpoint (if any) is intact" in m for m in messages), messages
    named = {Path(m.split("could not write checkpoint ")[1].split(": ")[0]) for m in messages}
    assert all(p.parent == ckpt_dir for p in named), named
    # The checkpoint written before the disk filled up is whole; no temp file is left behind.
    left = sorted(ckpt_dir.iterdir())
    assert len(left) == 1 and left[0].suffix == ".ckpt", left
    assert load_checkpoint(left[0])["global_step"] == 2
    assert len(calls) >= 2


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


# --------------------------------------------------------------------------- run directories


FAKE_KAGGLE_KEY = f"fake-kaggle-key-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def two_concurrent_runs(tmp_path_factory, tiny_data):
    """Two fast_dev_run CLI runs started together, with a fake Kaggle key in the environment."""
    base = tmp_path_factory.mktemp("concurrent")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KAGGLE_USERNAME": "someone",
           "KAGGLE_KEY": FAKE_KAGGLE_KEY}  # fmt: skip
    cmd = [
        *(sys.executable, "-m", "fruitnet.train", "trainer=cpu", *TINY),
        *("++trainer.fast_dev_run=true", "callbacks.progress_bar=null", "data.num_workers=0"),
        *("callbacks.model_size.latency=false", f"paths.root_dir={base}"),
        f"paths.data_dir={tiny_data}",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=300)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return base, outputs


def test_two_runs_started_together_get_distinct_run_directories(two_concurrent_runs):
    base, _ = two_concurrent_runs
    runs = sorted((base / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        results = read_results(run)
        assert results["run_dir"] == str(run)  # each wrote its own results, none overwritten
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    # Names carry microseconds: runs in the same second still differ.
    assert all(len(r.name.split("_")[-1].split("-")) == 4 for r in runs), runs


def test_credentials_never_reach_logs_or_results(two_concurrent_runs):
    base, outputs = two_concurrent_runs
    written = [p for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in written)
    leaked = [str(p) for p in written if FAKE_KAGGLE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert not any(FAKE_KAGGLE_KEY in out for out in outputs)
