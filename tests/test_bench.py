"""bench/bench.py --quick runs end to end and writes its markdown report (no timing asserted)."""

from __future__ import annotations

from helpers import REPO, cli


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


def test_bench_baseline_is_the_study_network():
    """(a) times the study's basic CNN (stages conv, ReLU, pool), fruitnet's has pool before ReLU:
    the same function, so the baseline must give the same outputs from the same weights."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench", REPO / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    torch.manual_seed(0)
    study = bench.study_model("cnn", 100, bench.NUM_CLASSES).eval()
    kinds = [type(m).__name__ for m in study.features]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d"] * 4
    ours = bench.create_model("cnn", num_classes=bench.NUM_CLASSES, input_size=100).eval()
    assert [type(m).__name__ for m in ours.features] == ["Conv2d", "MaxPool2d", "ReLU"] * 4
    ours.load_state_dict(study.state_dict())
    x = torch.randn(2, 3, 100, 100)
    assert torch.equal(study(x), ours(x))
