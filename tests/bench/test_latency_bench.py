"""bench/latency.py runs end to end and writes its report (no timing asserted)."""

from __future__ import annotations

import pytest
from helpers import REPO, cli


@pytest.mark.slow  # two tables per way and dataset shape of the default space: ~1.5 min
def test_latency_bench_writes_both_ways_for_both_shapes(tmp_path):
    out = tmp_path / "LATENCY.md"
    proc = cli("bench/latency.py", "--trials=1", "--nets=1", f"--out={out}", cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Latency table: predicted against measured whole nets")
    for dataset in (
        "fruits-360-small (100 px, 95 classes)",
        "chest_xray-small (128 px, 2 classes)",
    ):
        for way in ("one by one", "interleaved, yardstick"):
            assert f"| {dataset} | {way} |" in text, (dataset, way)
    assert text.count("| 1 of 1 |") + text.count("| 0 of 1 |") == 4
    assert str(tmp_path) not in text
