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
