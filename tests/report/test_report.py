"""`python -m fruitnet.report` and notebooks/compare_models.ipynb, on real runs.

The runs come from the multirun a user would type (`-m model=cnn,proxyless ...`), made once for
the module; the unit tests below them use hand-written results.json files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nbformat
import pytest
from helpers import REPO, TINY_DATA, TRAINED_DATA, cli, compose_cfg, read_results, train

from fruitnet import report
from fruitnet.data import generate_synthetic_fruits

NOTEBOOK = REPO / "notebooks" / "compare_models.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Tiny synthetic data (3 classes, 32 px): the runs here are about the report, not the models


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


def _annotations(ax) -> list:
    return [t for t in ax.texts if type(t).__name__ == "Annotation"]


def test_plot_points_are_numbered_and_keyed_to_their_runs(tmp_path):
    runs = [
        {"model": "cnn", "norm": False, "data": "fruits", "test_acc": 0.95, "weights_mb": 11.7,
         "experiment": "study_cnn_stage1", "label": "study/runs/a"},
        {"model": "proxyless", "norm": True, "data": "fruits", "test_acc": 0.99, "weights_mb": 27,
         "label": "train/runs/b", "arch": "logs/search/runs/mine/arch.json"},
        {"model": "resnet50", "norm": False, "data": "fruits", "test_acc": None},
    ]  # fmt: skip
    fig = report.accuracy_vs_size_figure(runs)
    ax, key_ax = fig.axes[:2]
    assert sorted(t.get_text() for t in _annotations(ax)) == ["1", "2"]
    assert "2 of 3 runs" in ax.get_title()
    key = key_ax.texts[0].get_text()
    # every point names its run, its model (a searched net as such) and norm in words
    assert "1  study_cnn_stage1 (study/runs/a): cnn, raw pixels /255 (norm=false)" in key
    assert "2  train/runs/b: searched net (mine), ImageNet-normalised input" in key
    assert "proxyless" not in key
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "searched net" in legend and "proxyless" not in legend
    empty = report.accuracy_vs_size_figure([{"model": "cnn"}])
    assert "no run has" in empty.axes[0].texts[0].get_text()
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_labels_never_overlap(tmp_path):
    """A training run and an evaluation of its checkpoint sit on one point; a sweep crowds
    others together: their numbers merge into one label instead of covering each other."""
    base = {"model": "cnn", "norm": False, "data": "fruits", "weights_mb": 11.68}
    runs = [
        {**base, "test_acc": 0.971, "label": "train/runs/a"},
        {**base, "test_acc": 0.971, "label": "eval/runs/b", "kind": "eval", "num_test": 10},
        {**base, "test_acc": 0.9712, "label": "train/runs/c"},
        *({**base, "test_acc": 0.9 + 0.002 * i, "weights_mb": 11 + 0.01 * i, "label": f"sweep/{i}"}
          for i in range(12)),
        {**base, "model": "resnet50", "test_acc": 0.99, "weights_mb": 90.0, "label": "r"},
    ]  # fmt: skip
    fig = report.accuracy_vs_size_figure(runs)
    ax = fig.axes[0]
    labels = _annotations(ax)
    numbers = [int(n) for t in labels for n in t.get_text().split(",")]
    assert sorted(numbers) == list(range(1, len(runs) + 1))  # every point keyed, once
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    assert any("1,2" in t.get_text() for t in labels)  # the run and its evaluation
    assert len(labels) < len(runs)
    assert "resnet50" in [t.get_text() for t in ax.get_legend().get_texts()]
    key = fig.axes[1].texts[0].get_text()
    assert "  2  eval eval/runs/b: cnn, raw pixels /255 (norm=false)" in key


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


# --------------------------------------------------------------------------- kinds of run


def _sections(text: str) -> dict[str, list[dict[str, str]]]:
    """The report's tables by heading ("Training runs", ...): one dict per row."""
    out = {}
    for block in text.split("## ")[1:]:
        heading, _, body = block.partition("\n")
        rows = _rows(body)
        out[heading.rsplit(" (", 1)[0]] = [dict(zip(rows[0], r, strict=True)) for r in rows[2:]]
    return out


def test_records_of_each_kind_are_read_as_that_kind(tmp_path):
    """Records written before `kind` (eval's with training keys, a search's without `model`)
    land in their own tables; eval's 21 s is eval time, never a training time."""
    _write(tmp_path / "train", model="cnn", data="fruits", norm=False, test_acc=0.971,
           val_acc=0.975, epochs=5, wall_s=3725.0, train_images_per_s=812.0)  # fmt: skip
    _write(tmp_path / "eval", model="cnn", data="fruits", norm=False, test_acc=0.971,
           val_acc=0.975, epochs=5, wall_s=21.35, train_images_per_s=None, task_name="eval",
           num_test=800, num_mistakes=23,
           best_ckpt=str(tmp_path / "train" / "checkpoints" / "last.ckpt"))  # fmt: skip
    _write(tmp_path / "search", arch_path="arch.json", chosen=["3x3_MBConv3"], data="fruits",
           target_latency_ms=4.0, measured_latency_ms=4.21, search_s=600.0,
           val_acc=0.5)  # fmt: skip
    _write(tmp_path / "study", kind="study", key={"study": []})
    messages: list[str] = []
    runs = report.load_runs([tmp_path], warn=messages.append)
    assert [(r["kind"], Path(r["label"]).name) for r in runs] == [
        ("train", "train"), ("eval", "eval"), ("search", "search")
    ]  # fmt: skip
    assert len(messages) == 1 and "study" in messages[0] and "not a run" in messages[0]
    tables = _sections(report.markdown_tables(runs))
    assert list(tables) == ["Training runs", "Evaluations", "Architecture searches"]
    [train], [evaluation], [search] = tables.values()
    assert train["train time"] == "1h 02m" and train["images/s"] == "812"
    assert evaluation["eval time"] == "21.4 s" and evaluation["test images"] == "800"
    # the old record's training values read as the training run's, next to it
    assert evaluation["val acc (training)"] == "97.50 %" and evaluation["ckpt epoch"] == "5"
    assert evaluation["trained in"] == train["run"] == runs[0]["label"]
    assert "train time" not in evaluation and "images/s" not in evaluation
    assert search["measured ms"] == "4.210" and search["search time"] == "10m 00s"
    with pytest.raises(ValueError, match="several kinds"):
        report.markdown_table(runs)
    assert _rows(report.markdown_table(runs, kind="eval"))[2][0] == runs[1]["label"]


def test_a_report_over_a_train_an_eval_and_a_search_run(
    trained_cnn, data_dir, tmp_path, capsys, caplog
):
    """Real records: the session's training run, an evaluation of its checkpoint and a tiny
    search; eval's record holds its own values, the training run's under `trained`."""
    from fruitnet.eval import run as run_eval
    from fruitnet.record import EVAL_KEYS, TRAINED_KEYS
    from fruitnet.search.__main__ import run as run_search

    fast = ["trainer=cpu", "data.num_workers=0", "verbose=false", "explain=false"]
    eval_dir = tmp_path / "eval"
    overrides = [f"ckpt_path={trained_cnn.ckpt}", *TRAINED_DATA, *fast]
    with caplog.at_level(logging.INFO, logger="fruitnet.eval"):
        evaluated = run_eval(compose_cfg(overrides, eval_dir, data_dir, config_name="eval"))
    # eval's last line names every file it wrote
    last = caplog.records[-1].getMessage()
    written = ["results.json", *(Path(p).name for p in evaluated["artifacts"].values() if p)]
    assert {"per_class.csv", "confusion_matrix.png", "mistakes.csv"} <= set(written)
    assert all(name in last and (eval_dir / name).is_file() for name in written), last
    train = trained_cnn.results
    assert (train["kind"], evaluated["kind"]) == ("train", "eval")
    assert read_results(eval_dir) == evaluated and read_results(trained_cnn.run_dir) == train
    metrics = {k for k in evaluated if k.startswith("test_")}
    assert set(evaluated) == set(EVAL_KEYS) | metrics
    assert not {"epochs", "val_acc", "train_images_per_s", "latency_ms_b1"} & set(evaluated)
    trained = evaluated["trained"]
    assert list(trained) == list(TRAINED_KEYS)
    assert Path(trained["path"]) == (trained_cnn.run_dir / "results.json").resolve()
    for key in ("test_acc", "epochs", "wall_s", "train_images_per_s", "optimizer", "lr"):
        assert trained[key] == train[key], key
    assert trained["val_acc"] == pytest.approx(train["val_acc"])
    assert evaluated["test_acc"] == pytest.approx(train["test_acc"], abs=1e-6)

    search_dir = tmp_path / "search"
    tiny = [
        *TRAINED_DATA, "data.batch_size=16", "data.num_workers=0", "trainer=cpu",
        "search.widths=[8,16]", "search.depths=[1,1]", "search.strides=[2,2]",
        "search.first_conv=8", "search.first_block=8", "search.feature_mix=32",
        "search.latency_repeats=2", "search.latency_warmup=1", "search.target_latency_ms=1000",
        "search.warmup_epochs=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "~logger", "callbacks.lr_monitor=null",
    ]  # fmt: skip
    searched = run_search(compose_cfg(tiny, search_dir, data_dir, config_name="search"))
    assert searched["kind"] == "search" and read_results(search_dir)["kind"] == "search"

    out = tmp_path / "out"
    assert (
        report.main([str(trained_cnn.run_dir), str(eval_dir), str(search_dir), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "1 training run(s), 1 evaluation(s), 1 search(es)" in printed
    tables = _sections(printed)
    assert list(tables) == ["Training runs", "Evaluations", "Architecture searches"]
    [train_row], [eval_row], [search_row] = tables.values()
    labels = {
        r["label"]: r["kind"] for r in report.load_runs([trained_cnn.run_dir, eval_dir, search_dir])
    }
    assert labels[train_row["run"]] == "train" and labels[eval_row["run"]] == "eval"
    assert labels[search_row["run"]] == "search"
    assert train_row["train time"] == report.table._duration(train["wall_s"])
    assert eval_row["eval time"] == report.table._duration(evaluated["wall_s"])
    assert eval_row["trained in"] == train_row["run"]
    assert search_row["measured ms"] == f"{searched['measured_latency_ms']:.3f}"
    md = (out / "report.md").read_text()
    assert md.index("## Training runs") < md.index("## Evaluations") < md.index("## Architecture")


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
