"""`python -m fruitnet.report` and notebooks/compare_models.ipynb, on real runs.

The runs come from the multirun a user would type (`-m model=cnn,proxyless ...`), made once for
the module; the unit tests below them use hand-written results.json files.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from helpers import REPO, cli, train

from fruitnet import report
from fruitnet.data import generate_synthetic_fruits

NOTEBOOK = REPO / "notebooks" / "compare_models.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Tiny synthetic data (3 classes, 32 px): the runs here are about the report, not the models
TINY_DATA = {"num_classes": 3, "train_per_class": 30, "test_per_class": 8, "image_size": 32}


@pytest.fixture(scope="module")
def multirun(tmp_path_factory, data_dir) -> Path:
    """Two fast_dev_run jobs (cnn, proxyless) in one sweep folder: <sweep>/0, <sweep>/1."""
    base = tmp_path_factory.mktemp("multirun")
    sweep = base / "logs" / "train" / "multiruns" / "2026-01-01_00-00-00-000000"
    generate_synthetic_fruits(data_dir / "synthetic", **TINY_DATA, seed=0)
    proc = cli(
        "-m", "fruitnet.train", "-m", "model=cnn,proxyless", "data=synthetic",
        *(f"data.{k}={v}" for k, v in TINY_DATA.items()),
        "++trainer.fast_dev_run=true", "model.pretrained=false",
        "callbacks.model_size.latency=false", "data.num_workers=0",
        f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}",
        env={"FRUITNET_OFFLINE": "1", "TORCH_HOME": str(base / "torch_home")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_a_multirun_writes_one_results_json_per_job(multirun):
    """`python -m fruitnet.train -m model=cnn,proxyless`: one job folder per model."""
    models = sorted(json.loads(p.read_text())["model"] for p in multirun.glob("*/results.json"))
    assert models == ["cnn", "proxyless"]
    assert (multirun / "multirun.yaml").is_file()


def _rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_cli_reports_a_multirun_folder(multirun, tmp_path):
    out = tmp_path / "out"
    proc = cli("-m", "fruitnet.report", str(multirun), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    header, body = rows[0], rows[2:]
    for column in ["model", "data", "norm", "params (M)", "weights MiB", "ckpt MiB", "GFLOPs",
                   "latency ms (b=1)", "test acc", "epochs", "train time", "images/s"]:  # fmt: skip
        assert column in header
    models = sorted(row[header.index("model")] for row in body)
    assert models == ["cnn", "proxyless"]
    for row in body:
        cells = dict(zip(header, row, strict=True))
        assert cells["data"] == "synthetic" and cells["norm"] == "no"
        assert cells["test acc"].endswith("%")
        # fast_dev_run keeps no checkpoint and latency was off: shown as missing, not as 0
        assert cells["ckpt MiB"] == report.MISSING == cells["latency ms (b=1)"]
        assert float(cells["weights MiB"]) > 0
    md = (out / "report.md").read_text()
    assert "| cnn |" in md and "| proxyless |" in md and "![" in md
    png = (out / "report.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_glob_arguments_and_results_files(multirun, tmp_path, capsys):
    assert report.main([str(multirun / "*"), "--out", str(tmp_path)]) == 0
    assert len(_rows(capsys.readouterr().out)) == 2 + 2
    # A glob over results.json files, and a single run directory
    assert report.main([str(multirun / "[0]" / "results.json"), "--out", str(tmp_path)]) == 0
    assert len(_rows(capsys.readouterr().out)) == 2 + 1
    assert report.main([str(multirun.parent / "*" / "1"), "--out", str(tmp_path)]) == 0
    body = _rows(capsys.readouterr().out)[2:]
    assert [row[1] for row in body] == ["proxyless"]


def test_default_is_every_run_under_logs(multirun, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(multirun.parents[3])  # the folder holding logs/
    monkeypatch.delenv("FRUITNET_ROOT", raising=False)
    assert report.main([]) == 0
    assert len(_rows(capsys.readouterr().out)) == 2 + 2
    assert Path("report.md").is_file() and Path("report.png").is_file()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRUITNET_ROOT", str(multirun.parents[3]))
    assert report.default_logs_dir() == multirun.parents[3] / "logs"


def test_no_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no results.json found under" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "report.md").exists()
    assert report.main([str(tmp_path / "nope-*"), "--out", str(tmp_path)]) == 1
    assert "no results.json" in capsys.readouterr().err


# --------------------------------------------------------------------------- unit tests


def _write(folder: Path, **results) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_missing_keys_show_as_a_dash_and_chest_metrics_appear_when_present(tmp_path):
    _write(tmp_path / "fruit", model="cnn", data="fruits", norm=False, test_acc=0.9485,
           weights_mb=11.68, wall_s=3725.0)  # fmt: skip
    runs = report.load_runs([tmp_path])
    table = report.markdown_table(runs)
    assert "94.85 %" in table and "1h 02m" in table and "11.68" in table
    assert "recall" not in table and report.MISSING in table

    _write(tmp_path / "chest", model="proxyless", data="chest_xray", norm=True, test_acc=0.9,
           test_precision=0.91, test_recall=0.97, test_specificity=0.8, test_f1=0.94,
           test_auroc=0.955)  # fmt: skip
    runs = report.load_runs([tmp_path])
    rows = _rows(report.markdown_table(runs))
    header = rows[0]
    for column in ["precision", "recall", "specificity", "F1", "AUROC"]:
        assert column in header
    chest = dict(zip(header, rows[2], strict=True))  # sorted by data: chest_xray first
    assert chest["recall"] == "97.00 %" and chest["AUROC"] == "0.955"
    fruit = dict(zip(header, rows[3], strict=True))
    assert fruit["recall"] == report.MISSING and fruit["norm"] == "no"


def test_unreadable_or_foreign_json_is_skipped_with_a_message(tmp_path):
    _write(tmp_path / "ok", model="cnn", test_acc=0.5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{ not json")
    _write(tmp_path / "other", something="else")
    messages: list[str] = []
    runs = report.load_runs([tmp_path], warn=messages.append)
    assert [r["model"] for r in runs] == ["cnn"]
    assert len(messages) == 2 and all("skipping" in m for m in messages)


def test_labels_name_runs_by_their_distinct_path(tmp_path):
    for name in ["train/runs/a", "train/multiruns/t/0", "train/multiruns/t/1"]:
        _write(tmp_path / "logs" / name, model="cnn")
    labels = sorted(r["label"] for r in report.load_runs([tmp_path / "logs"]))
    assert labels == ["multiruns/t/0", "multiruns/t/1", "runs/a"]
    assert [r["label"] for r in report.load_runs([tmp_path / "logs/train/multiruns/t/1"])] == ["1"]


def test_plot_labels_and_empty_plot(tmp_path):
    runs = [
        {"model": "cnn", "norm": False, "data": "fruits", "test_acc": 0.95, "weights_mb": 11.7},
        {"model": "proxyless", "norm": True, "data": "fruits", "test_acc": 0.99, "weights_mb": 27},
        {"model": "resnet50", "norm": False, "data": "fruits", "test_acc": None},
    ]
    fig = report.accuracy_vs_size_figure(runs)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["cnn/raw", "proxyless/norm"]
    assert "2 of 3 runs" in ax.get_title()
    empty = report.accuracy_vs_size_figure([{"model": "cnn"}])
    assert "no run has" in empty.axes[0].texts[0].get_text()
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_MAGIC)


def test_metrics_csv_curves(tmp_path):
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(
        "epoch,lr-Adam,step,train/loss_epoch,val/acc\n"
        ",0.001,0,,\n"
        "0,,4,,0.5\n"
        "0,,4,1.5,\n"
        "1,,9,,0.75\n"
        "1,,9,0.9,\n"
    )
    rows = report.read_metrics(run)
    assert report.epoch_curve(rows, "val/acc") == ([0, 1], [0.5, 0.75])
    assert report.epoch_curve(rows, "train/loss_epoch") == ([0, 1], [1.5, 0.9])
    assert report.read_metrics(tmp_path / "no-such-run") == []
    fig = report.curves_figure([{"label": "run", "run_path": str(run)}])
    assert fig.axes[2].get_lines()[0].get_ydata().tolist() == [0.5, 0.75]


# --------------------------------------------------------------------------- the notebook


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    assert "FRUITNET_LOGS" in "".join(c.source for c in code)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_make_train_runs(tmp_path, data_dir, monkeypatch):
    """Runs laid out as `make train` leaves them (logs/train/runs/<timestamp>/), one with two
    epochs of curves, one without a CSV log; then the notebook, headless, with FRUITNET_LOGS."""
    from nbclient import NotebookClient

    generate_synthetic_fruits(data_dir / "synthetic", **TINY_DATA, seed=0)
    data = ["data=synthetic", *(f"data.{k}={v}" for k, v in TINY_DATA.items()), "data.batch_size=8"]
    runs = tmp_path / "logs" / "train" / "runs"
    train([*data, "trainer.max_epochs=2"], runs / "2026-01-01_00-00-00-000000", data_dir)
    no_csv = ["~logger", "callbacks.lr_monitor=null"]  # like a run with logging off
    train(
        [*data, "model=proxyless", "model.pretrained=false", "trainer.max_epochs=1", *no_csv],
        runs / "2026-01-01_00-10-00-000000",
        data_dir,
    )

    monkeypatch.setenv("FRUITNET_LOGS", str(tmp_path / "logs"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "2 run(s)" in text and "best run:" in text
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| cnn |" in markdown and "| proxyless |" in markdown
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # accuracy vs size, curves, confusion matrix
