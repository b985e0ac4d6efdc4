"""Runs in the experiment trackers teams already use: MLflow and Weights & Biases, offline first.

`build_loggers` turns the config's logger group into Lightning loggers (Lightning's own
`MLFlowLogger` and `WandbLogger`, their params cleaned of secrets and home paths), checks a tracking
server before any data is read, and names the experiment / group so that a multirun is one MLflow
experiment or W&B group with a run per job. Lightning logs the per-epoch metrics under the CSV's
names; `finish` adds, once results.json is written, its numbers as summary metrics, the device tag
and the artifacts (results.json, confusion matrix, report plot, the best checkpoint's path or file).
"""

from __future__ import annotations

import logging
import re
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.fabric.utilities.logger import _convert_params
from lightning.pytorch import loggers as pl_loggers
from omegaconf import DictConfig, OmegaConf, open_dict

from fruitnet.config import hydra_choices, instantiate_group, is_multirun, to_primitive

log = logging.getLogger(__name__)

# Keys of the logger group that configure the tracking, not a logger
SETTINGS = ("fail_on_error", "log_checkpoint")
CHECKPOINT_MODES = ("path", "file", "none")
# Config keys whose values are never sent to a tracker
SECRET = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)
# A tracking server that does not answer a TCP connect within this is unreachable
CONNECT_TIMEOUT_S = 5.0


class TrackerUnreachable(RuntimeError):
    """A tracking server that cannot be reached: one line, naming the URI."""


def clean_params(value: Any, home: str | None = None) -> Any:
    """Params as a tracker may keep them: keys that look like secrets dropped, the home folder
    written ``~`` (a shared tracker shows no user's home path)."""
    home = str(Path.home()) if home is None else home
    if isinstance(value, Mapping):
        return {k: clean_params(v, home) for k, v in value.items() if not SECRET.search(str(k))}
    if isinstance(value, list | tuple):
        return [clean_params(v, home) for v in value]
    if isinstance(value, str) and len(home) > 1:
        return re.sub(rf"{re.escape(home)}(?=/|$)", "~", value)
    return value


class MLFlowLogger(pl_loggers.MLFlowLogger):
    """Lightning's MLFlowLogger; every param goes through `clean_params` first."""

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(clean_params(_convert_params(params)))


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's WandbLogger; every param goes through `clean_params` first."""

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(clean_params(_convert_params(params)))


def run_group(cfg: DictConfig) -> str:
    """The MLflow experiment / W&B group of this run: ``tracking_group`` when set (a study's
    runs), else ``task_name``, and in a multirun (a sweep, an Optuna search)
    ``task_name/<sweep folder>``, so the sweep's jobs sit together."""
    if cfg.get("tracking_group"):
        return str(cfg.tracking_group)
    name = str(cfg.get("task_name", "train"))
    if is_multirun():
        from hydra.core.hydra_config import HydraConfig

        name = f"{name}/{Path(str(HydraConfig.get().sweep.dir)).name}"
    return name


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """What a run is, as tags a tracker filters by; the device comes with the record (`finish`)."""
    choices = hydra_choices()[0]
    tags = {
        "model": cfg.model.get("name"),
        "data": choices.get("data"),
        "experiment": choices.get("experiment"),
        "accelerator": cfg.trainer.get("accelerator"),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def check_reachable(uri: str) -> None:
    """An http(s) tracking server must answer a TCP connect now, not at the end of a long run."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise TrackerUnreachable(
            f"MLflow tracking server {uri} is unreachable ({reason}); "
            "logger.fail_on_error=false goes on without it"
        ) from None


def _prepare(node: DictConfig, cfg: DictConfig) -> DictConfig:
    """The logger's node with what only the run knows filled in: experiment / group, tags, and
    for a local SQLite store its folder and the artifacts beside it."""
    node = OmegaConf.create(to_primitive(node))  # resolved while it still has its root
    target = str(node.get("_target_", ""))
    with open_dict(node):
        if target.endswith("MLFlowLogger"):
            uri = str(node.get("tracking_uri") or "")
            check_reachable(uri)
            if uri.startswith("sqlite:///"):
                store = Path(uri.removeprefix("sqlite:///")).parent
                store.mkdir(parents=True, exist_ok=True)
                if not node.get("artifact_location"):
                    node.artifact_location = str(store / "artifacts")
            node.experiment_name = node.get("experiment_name") or run_group(cfg)
            node.tags = {**run_tags(cfg), **(to_primitive(node.get("tags")) or {})}
        elif target.endswith("WandbLogger"):
            node.group = node.get("group") or run_group(cfg)
            node.tags = sorted({*run_tags(cfg).values(), *(node.get("tags") or [])})
            Path(str(node.get("save_dir", "."))).mkdir(parents=True, exist_ok=True)
    return node


def check_servers(cfg: DictConfig) -> None:
    """Before any data is read: a tracking server that cannot be reached stops the run in one
    line (unless ``logger.fail_on_error=false``: then `build_loggers` leaves it out)."""
    group = cfg.get("logger") or {}
    if not group.get("fail_on_error", True):
        return
    for node in group.values():
        target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
        if target.endswith("MLFlowLogger"):
            check_reachable(str(node.get("tracking_uri") or ""))


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The loggers of ``cfg.logger``; the trackers among them get the composed config as params.
    A tracking server that cannot be reached stops the run here in one line, or with
    ``logger.fail_on_error=false`` is left out with a warning (CSV goes on)."""
    group = cfg.get("logger")
    if not group:
        return []
    fail = bool(group.get("fail_on_error", True))
    mode = str(group.get("log_checkpoint", "path"))
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"logger.log_checkpoint={mode}: use one of {', '.join(CHECKPOINT_MODES)}")
    nodes = {}
    for name, node in group.items():
        if name in SETTINGS or node is None:
            continue
        try:
            nodes[name] = _prepare(node, cfg) if isinstance(node, DictConfig) else node
        except TrackerUnreachable as err:
            if fail:
                raise
            log.warning("fruitnet: %s", err)
    loggers = instantiate_group(OmegaConf.create(nodes))
    params = clean_params({k: to_primitive(cfg[k]) for k in cfg if k != "hydra"})
    for logger in trackers(loggers):
        logger.log_hyperparams(params)
    return loggers


def trackers(loggers: list[Any]) -> list[Any]:
    return [lg for lg in loggers if isinstance(lg, MLFlowLogger | WandbLogger)]


def summary_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The record's numbers (test_acc, val_acc, params, wall_s, ...); booleans are no numbers."""
    return {
        k: float(v)
        for k, v in results.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def run_artifacts(results: Mapping[str, Any], run_dir: Path, out: Path) -> list[Path]:
    """results.json, the confusion matrix and the report's accuracy-vs-size plot of this run
    (drawn into ``out``), and the PNGs the run wrote itself."""
    from fruitnet import plots
    from fruitnet.report.figures import accuracy_vs_size_figure

    files = [run_dir / "results.json", *sorted(run_dir.glob("*.png"))]
    if results.get("confusion_matrix"):
        fig = plots.confusion_matrix_figure(results["confusion_matrix"], results["class_names"])
        files.append(plots.save_figure(fig, out / "confusion_matrix.png"))
    run = {**results, "kind": "train", "label": run_dir.name}
    files.append(plots.save_figure(accuracy_vs_size_figure([run]), out / "report.png"))
    return [f for f in files if f.is_file()]


def finish(loggers: list[Any], results: Mapping[str, Any], cfg: DictConfig) -> None:
    """After results.json is written: its numbers, the device and the artifacts into each
    tracker. A tracker that fails here warns in one line; the run's results stand."""
    group = cfg.get("logger") or {}
    mode = str(group.get("log_checkpoint", "path"))
    run_dir = Path(str(results["run_dir"]))
    for logger in trackers(loggers):
        try:
            with tempfile.TemporaryDirectory() as tmp:
                files = run_artifacts(results, run_dir, Path(tmp))
                ckpt = results.get("best_ckpt")
                if mode == "file" and ckpt:
                    files.append(Path(ckpt))
                if isinstance(logger, MLFlowLogger):
                    _finish_mlflow(logger, results, files, ckpt if mode == "path" else None)
                else:
                    _finish_wandb(logger, results, files, ckpt if mode == "path" else None)
        except Exception as err:  # the run is done and recorded; the tracker copy is extra
            log.warning("fruitnet: %s could not take the results: %s", type(logger).__name__, err)


def _finish_mlflow(logger: MLFlowLogger, results, files: list[Path], ckpt: str | None) -> None:
    from mlflow.entities import Metric, RunTag

    client, run_id = logger.experiment, logger.run_id
    now = int(1000 * time.time())
    metrics = [Metric(k, v, now, 0) for k, v in summary_metrics(results).items()]
    tags = [RunTag("device", str(results.get("device"))), RunTag("kind", "train")]
    if ckpt:
        tags.append(RunTag("best_ckpt", clean_params(ckpt)))
    for i in range(0, len(metrics), 100):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[i : i + 100], tags=tags if i == 0 else [])
    for path in files:
        client.log_artifact(run_id, str(path), "checkpoints" if path.suffix == ".ckpt" else None)


def _finish_wandb(logger: WandbLogger, results, files: list[Path], ckpt: str | None) -> None:
    import wandb

    run = logger.experiment
    run.summary.update(summary_metrics(results))
    run.tags = tuple(sorted({*run.tags, str(results.get("device"))}))
    if ckpt:
        run.summary["best_ckpt"] = clean_params(ckpt)
    artifact = wandb.Artifact(f"run-{run.id}", type="results")
    for path in files:
        artifact.add_file(
            str(path), name=f"checkpoints/{path.name}" if path.suffix == ".ckpt" else None
        )
    run.log_artifact(artifact)
    # A multirun's next job calls wandb.init in this process: this run must end first.
    run.finish()


def store_uri(where: str) -> str:
    """A tracking URI from what `report --mlflow` was given: a URI as it is, a folder holding an
    mlflow.db (``logs/mlflow``) or the .db file as its SQLite URI."""
    path = Path(where).expanduser()
    if path.is_dir():
        path = path / "mlflow.db"
    if "://" not in where:
        if not path.is_file():
            raise FileNotFoundError(f"--mlflow {where}: no MLflow store (mlflow.db) there")
        return f"sqlite:///{path.resolve()}"
    return where


def mlflow_records(where: str, warn: Any) -> list[tuple[str, Any, str]]:
    """(where it is, the results.json record, the recorded run folder) of every run of an MLflow
    store that holds a results.json artifact (`finish` logs it); others are skipped via ``warn``."""
    import json

    import mlflow

    uri = store_uri(where)
    check_reachable(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    records: list[tuple[str, Any, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in client.search_runs(ids, max_results=50_000) if ids else []:
            run_id = run.info.run_id
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path="results.json", dst_path=f"{tmp}/{run_id}",
                    tracking_uri=uri,
                )  # fmt: skip
                data = json.loads(Path(local).read_text())
            except Exception as err:  # a run of someone else's, or one that stopped early
                warn(f"skipping MLflow run {run_id} in {uri}: no results.json ({err})")
                continue
            records.append((f"{uri}#{run_id}", data, str(data.get("run_dir") or run_id)))
    return records
