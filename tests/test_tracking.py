"""Runs in MLflow and Weights & Biases (fruitnet.tracking), offline: a temporary SQLite store and
W&B's offline run files, read back with each tool's own reader. Nothing contacts a network; the
unreachable server is a closed loopback port."""

from __future__ import annotations

import csv
import json
import struct
import time
from pathlib import Path

import pytest
from helpers import FAST, cli, train

mlflow = pytest.importorskip("mlflow")
wandb_pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
from google.protobuf.message import DecodeError  # noqa: E402  (protobuf comes with wandb)

TINY = ["data=synthetic", "data.train_per_class=6", "data.test_per_class=3", "data.batch_size=8"]
RECIPE = [*TINY, "trainer.max_epochs=2"]
UNREACHABLE = "http://127.0.0.1:9"  # discard port on loopback: refused at once


def _csv_columns(run_dir: Path) -> set[str]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as fh:
        return set(next(csv.reader(fh)))


def _store(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / 'logs' / 'mlflow' / 'mlflow.db'}"


def test_mlflow_run_has_params_metrics_results_and_artifacts(tmp_path, data_dir, monkeypatch):
    # The run folder sits in the home folder: no param may show it as an absolute path.
    monkeypatch.setenv("HOME", str(tmp_path))
    run_dir = tmp_path / "run"
    results = train(["logger=mlflow", *RECIPE], run_dir, data_dir)

    client = mlflow.MlflowClient(_store(run_dir))
    experiment = client.get_experiment_by_name("train")
    (run,) = client.search_runs([experiment.experiment_id])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    # the composed config, flattened
    assert params["model/name"] == "cnn"
    assert params["seed"] == "42"
    assert params["trainer/max_epochs"] == "2"
    assert params["paths/output_dir"] == "~/run"
    assert not [v for v in params.values() if str(tmp_path) in v]
    # per-epoch metrics under the CSV's names, one value per epoch
    assert {"val/acc", "train/loss_epoch"} <= _csv_columns(run_dir)
    for name in ("val/acc", "train/loss_epoch"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2
    # results.json's numbers as summary metrics
    assert metrics["test_acc"] == pytest.approx(results["test_acc"])
    assert metrics["params"] == results["params"]
    # tags: what was run, where
    assert tags["model"] == "cnn" and tags["data"] == "synthetic"
    assert tags["device"] == results["device"]
    assert tags["best_ckpt"] == "~/run/" + str(Path(results["best_ckpt"]).relative_to(run_dir))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "confusion_matrix.png", "report.png"} <= artifacts
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="results.json", tracking_uri=_store(run_dir)
    )
    assert json.loads(Path(local).read_text())["test_acc"] == results["test_acc"]


def test_mlflow_checkpoint_file_is_an_artifact(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    overrides = ["logger=mlflow", "logger.log_checkpoint=file", *TINY, "trainer.max_epochs=1"]
    results = train(overrides, run_dir, data_dir)
    client = mlflow.MlflowClient(_store(run_dir))
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    names = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert names == {f"checkpoints/{Path(results['best_ckpt']).name}"}
    assert "best_ckpt" not in run.data.tags


def _wandb_records(path: Path) -> list:
    """The records of an offline .wandb file: LevelDB's log format (32 KiB blocks, 7-byte chunk
    headers: crc, length, type) after W&B's 7-byte file header, each a `Record` protobuf."""
    data, block, pos, chunk, records = path.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (kind == 0 and length == 0) or pos + 7 + length > len(data):
            break  # the end, or a chunk the service is still writing
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _records_by_type(path: Path, wait_s: float = 30.0) -> dict[str, list]:
    """The file's records by type, read again until W&B's last record (``exit``) is there: its
    service process writes the file, and under the suite's two workers the test once found no run
    record and once a record cut short (a protobuf DecodeError), as if read before the service had
    flushed it (alone it passed every time)."""
    deadline = time.monotonic() + wait_s
    while True:
        by_type: dict[str, list] = {}
        try:
            for record in _wandb_records(path):
                by_type.setdefault(record.WhichOneof("record_type"), []).append(record)
        except DecodeError:
            by_type = {}
        if "exit" in by_type or time.monotonic() > deadline:
            return by_type
        time.sleep(0.5)


def test_wandb_offline_run_files(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: offline is also the default
    run_dir = tmp_path / "run"
    results = train(["logger=wandb", *RECIPE], run_dir, data_dir)

    (run_file,) = (run_dir / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    by_type = _records_by_type(run_file)
    run = by_type["run"][0]
    assert run.run.run_group == "train" and run.run.project == "fruitnet"
    # tags set after init (the device) come in a later run record
    tags = {t for record in by_type["run"] for t in record.run.tags}
    assert {"cnn", "synthetic", results["device"]} <= tags
    config = {}
    for record in by_type["config"] + [run]:
        for item in (record.config if record.HasField("config") else record.run.config).update:
            config[item.key] = json.loads(item.value_json)
    assert config["model"]["name"] == "cnn" and config["seed"] == 42
    assert config["paths"]["output_dir"] == "~/run"
    history = [
        {
            i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json)
            for i in r.history.item
        }
        for r in by_type["history"]
    ]
    assert len([h for h in history if "val/acc" in h]) == 2
    assert "train/loss_epoch" in _csv_columns(run_dir)
    summary = {}
    for record in by_type["summary"]:
        for item in record.summary.update:
            summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert summary["test_acc"] == pytest.approx(results["test_acc"])
    (artifact,) = by_type["artifact"]
    files = {entry.path for entry in artifact.artifact.manifest.contents}
    assert {"results.json", "confusion_matrix.png", "report.png"} <= files


def test_unreachable_server_is_one_line_at_the_start(tmp_path, data_dir):
    proc = cli(
        "-m", "fruitnet.train", *FAST, *TINY, "logger=mlflow",
        f"logger.mlflow.tracking_uri={UNREACHABLE}", f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if UNREACHABLE in line]
    assert len(errors) == 1 and "unreachable" in errors[0], output
    assert "Traceback" not in output
    assert "fruitnet.data" not in output  # stopped before the data was read


def test_unreachable_server_goes_on_with_csv(tmp_path, data_dir, caplog):
    overrides = [
        "logger=mlflow", f"logger.mlflow.tracking_uri={UNREACHABLE}", "logger.fail_on_error=false",
        *TINY, "trainer.max_epochs=1",
    ]  # fmt: skip
    results = train(overrides, tmp_path / "run", data_dir)
    assert results["test_acc"] is not None
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
    assert any(UNREACHABLE in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def two_job_sweep(tmp_path_factory, data_dir) -> Path:
    """A two-job multirun (seed=1,2) into one MLflow store; its root folder."""
    root = tmp_path_factory.mktemp("sweep")
    proc = cli(
        "-m", "fruitnet.train", "-m", *FAST, *TINY, "trainer.max_epochs=1", "logger=mlflow",
        "seed=1,2", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={root / 'sweep'}",
        env={"FRUITNET_ROOT": str(root), "FRUITNET_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.slow  # a two-job multirun through the command line: 17 s
def test_multirun_is_one_experiment_with_a_run_per_job(two_job_sweep):
    client = mlflow.MlflowClient(_store(two_job_sweep))
    experiment = client.get_experiment_by_name("train/sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    dirs = {r.data.tags.get("best_ckpt", "").split("/checkpoints/")[0] for r in runs}
    assert dirs == {str(two_job_sweep / "sweep" / n) for n in ("0", "1")}


def test_report_from_mlflow_matches_results_files(two_job_sweep, tmp_path, capsys):
    from fruitnet.report import load_runs, main, markdown_tables

    from_files = load_runs([two_job_sweep / "sweep"])
    from_mlflow = load_runs([], mlflow=[str(two_job_sweep / "logs" / "mlflow")])
    assert len(from_files) == 2
    assert markdown_tables(from_mlflow) == markdown_tables(from_files)
    assert [r["test_acc"] for r in from_mlflow] == [r["test_acc"] for r in from_files]
    # and the command line: same table printed, report.md written
    out_files, out_mlflow = tmp_path / "files", tmp_path / "mlflow"
    assert main([str(two_job_sweep / "sweep"), "--out", str(out_files)]) == 0
    printed_files = capsys.readouterr().out
    assert main(["--mlflow", _store(two_job_sweep), "--out", str(out_mlflow)]) == 0
    printed_mlflow = capsys.readouterr().out
    table = printed_files.split("\n\n")[0]
    assert table and table in printed_mlflow
    assert (out_mlflow / "report.png").is_file()


def test_report_mlflow_unreachable_is_one_line(capsys):
    from fruitnet.report import main

    assert main(["--mlflow", UNREACHABLE]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and UNREACHABLE in err


def test_params_drop_secrets_and_home_paths():
    from fruitnet.tracking import clean_params

    params = {
        "data": {"root": "/home/ann/data/fruits", "api_key": "k", "other": "/home/anna/x"},
        "kaggle_token": "t",
        "paths": ["/home/ann", "/home/ann/logs"],
        "seed": 3,
    }
    assert clean_params(params, home="/home/ann") == {
        "data": {"root": "~/data/fruits", "other": "/home/anna/x"},
        "paths": ["~", "~/logs"],
        "seed": 3,
    }


@pytest.mark.slow  # a two-trial Optuna sweep through the command line: 20 s
def test_optuna_sweep_is_one_experiment_with_a_run_per_trial(tmp_path, data_dir):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = cli(
        "-m", "fruitnet.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=7", *FAST, *TINY, "trainer.max_epochs=1", "logger=mlflow",
        f"paths.data_dir={data_dir}", f"hydra.sweep.dir={tmp_path / 'optuna'}",
        env={"FRUITNET_ROOT": str(tmp_path), "FRUITNET_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow.MlflowClient(_store(tmp_path))
    experiment = client.get_experiment_by_name("train/optuna")
    runs = client.search_runs([experiment.experiment_id])
    # one run per trial, each with the learning rate Optuna sampled for it
    assert len(runs) == 2
    assert len({r.data.params["optimizer/lr"] for r in runs}) == 2
    assert all("test/acc" in r.data.metrics for r in runs)


@pytest.mark.slow  # two study runs (stage 1, stage 2), each a training process: 40 s
def test_study_runs_are_one_experiment(tmp_path, shared_data):
    overrides = ('study.overrides=["logger=mlflow","data.batch_size=16","trainer.limit_train_batches=1",'
                 '"trainer.limit_val_batches=1","trainer.limit_test_batches=1"]')  # fmt: skip
    proc = cli(
        "-m", "fruitnet.study", "data=fruits", f"data.root={shared_data / 'fruits-360-sample'}",
        "study.runs=[study_cnn_stage1,study_cnn_stage2]", "study.estimate=false", "study.epochs=1",
        overrides, cwd=tmp_path, env={"FRUITNET_ROOT": str(tmp_path), "FRUITNET_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    client = mlflow.MlflowClient(_store(tmp_path))
    experiment = client.get_experiment_by_name("study/fruits")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["experiment"] for r in runs) == [
        "study_cnn_stage1",
        "study_cnn_stage2",
    ]
    assert all("test/acc" in r.data.metrics for r in runs)
