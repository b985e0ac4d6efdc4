"""bench/bench.py --quick runs end to end and writes its markdown report (no timing asserted); the
reports show no path of the machine that wrote them."""

from __future__ import annotations

import importlib
import sys

import pytest
from helpers import REPO, cli

sys.path.insert(0, str(REPO / "bench"))  # bench/benchlib, bench/study_loop.py
common = importlib.import_module("benchlib.common")


@pytest.mark.slow  # a whole benchmark run in a subprocess: 50 s idle, 2 min beside other tests
def test_bench_quick_writes_the_report(tmp_path, shared_data):
    out = tmp_path / "RESULTS.md"
    proc = cli(
        "bench/bench.py",
        "--quick",
        "--threads=1",  # a shared 2-core CI box: 2 OpenMP threads contend with each other
        f"--out={out}",
        f"--data={shared_data / 'fruits-360-small'}",
        f"--cache-dir={tmp_path / 'cache'}",
        "--device=cpu",
        cwd=REPO,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for header in [
        "# fruitnet benchmark",
        "QUICK RUN",
        "## End to end: the default command from JPEG files",
        "| model | batch | precision | train images/epoch | study 1st step s | study epoch s "
        "| study img/s | fruitnet 1st step s | fruitnet epoch 1 s | fruitnet epoch s "
        "| fruitnet img/s | ratio | per round | target |",
        "time to first step",
        "## Train step",
        "| model | input | batch | steps a/b/c | (a) plain fp32 | (b) plain fruitnet settings "
        "| (c) fruitnet.train | c/a | target c/a | c/b | target c/b | c/b median step |",
        "## Data loading",
        "| path | images | seconds | images/s | ratio | target |",
        "## Accuracy",
        "| precision | seed | epochs | test acc % | best val acc % | train images/s | wall s |",
        "## Targets",
        "## Machine",
        "Command: `python bench/bench.py --quick",
    ]:
        assert header in text, header
    for model in ("| cnn |", "| proxyless |", "| resnet50 |"):
        assert model in text, model
    assert "PASS" in text or "MISS" in text
    # --out, --data and --cache-dir are folders of this machine: placeholders in the report
    assert str(tmp_path) not in text and str(shared_data) not in text
    assert "'--out=<out>'" in text and "'--cache-dir=<cache-dir>'" in text


def test_bench_baseline_is_the_study_network():
    """(a) times the study's basic CNN (stages conv, ReLU, pool), fruitnet's has pool before ReLU:
    the same function, so the baseline must give the same outputs from the same weights."""
    import torch

    from fruitnet.models import create_model

    num_classes = importlib.import_module("benchlib.compose").NUM_CLASSES
    study_model = importlib.import_module("study_loop").study_model

    torch.manual_seed(0)
    study = study_model("cnn", 100, num_classes).eval()
    kinds = [type(m).__name__ for m in study.features]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d"] * 4
    ours = create_model("cnn", num_classes=num_classes, input_size=100).eval()
    assert [type(m).__name__ for m in ours.features] == ["Conv2d", "MaxPool2d", "ReLU"] * 4
    ours.load_state_dict(study.state_dict())
    x = torch.randn(2, 3, 100, 100)
    assert torch.equal(study(x), ours(x))


def test_report_paths_are_relative_to_the_repo_or_placeholders(tmp_path):
    shown = common.shown_args(
        ["--quick", "--out", str(tmp_path / "r.md"), f"--data={tmp_path}", "--models", "cnn"]
    )
    assert shown == ["--quick", "--out", "<out>", "--data=<data>", "--models", "cnn"]
    inside = REPO / "logs" / "recipes" / "2026-12-01_08-14-41"
    assert common.shown_args(["--into", str(inside)]) == [
        "--into",
        "logs/recipes/2026-12-01_08-14-41",
    ]
    assert common.shown_args(["--into", "logs/x"]) == ["--into", "logs/x"]  # as typed
    run = tmp_path / "run"
    cmd = [
        f"hydra.run.dir={run}/train_0",
        f"data.root={tmp_path / 'd'}",
        f"model.arch={run}/a.json",
    ]
    assert common.shown_args(cmd, {run: "<run>", tmp_path / "d": "<fruits-360-small>"}) == [
        "hydra.run.dir=<run>/train_0",
        "data.root=<fruits-360-small>",
        "model.arch=<run>/a.json",
    ]
    assert common.shown_value(str(tmp_path / "runner"), {run: "<run>"}, "x") == "<x>"


def test_committed_reports_hold_no_machine_paths():
    for md in sorted((REPO / "bench").glob("*.md")):
        text = md.read_text()
        for root in ("/work/", "/tmp/", "/root/", "/home/"):
            assert root not in text, f"{md.name} holds {root}"
