"""bench/time_nets.py: records and train run folders timed side by side, and what it refuses."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
time_nets = importlib.import_module("time_nets")
RECORDS = REPO / "bench" / "runs" / "search"


def test_records_and_a_run_folder_are_timed_side_by_side(tmp_path, capsys, trained_cnn):
    cnn = RECORDS / "fruits_train_basic_cnn_seed0.json"
    # the session's trained CNN as a record of its own size, and its run folder
    spec = time_nets.net_spec(trained_cnn.run_dir)
    record = tmp_path / "mine.json"
    record.write_text(json.dumps({"net": spec}))
    rows = time_nets.main(
        [str(record), str(trained_cnn.run_dir), "--rounds", "1", "--repeats", "3"]
    )
    assert [r["net"] for r in rows] == ["mine", trained_cnn.run_dir.name]
    assert all(r["ort_ms"] > 0 and r["eager_ms"] > 0 for r in rows)
    assert rows[0]["params"] == rows[1]["params"] and rows[0]["flops"] == rows[1]["flops"]
    out = capsys.readouterr().out
    assert f"| mine | {rows[0]['ort_ms']:.2f} | {rows[0]['eager_ms']:.2f} | " in out
    assert "batch 1" in out and "fp32" in out and "ONNX Runtime" in out
    # a 100 px fruits record beside a 128 px chest one is refused, naming both sizes
    chest = RECORDS / "chest_train_basic_cnn_seed0.json"
    with pytest.raises(SystemExit, match=r"different input sizes \[100, 128\]"):
        time_nets.main([str(cnn), str(chest)])


def test_a_search_record_or_a_folder_without_results_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="holds no trained net"):
        time_nets.net_spec(RECORDS / "fruits_search.json")
    with pytest.raises(SystemExit, match="neither a record"):
        time_nets.net_spec(tmp_path)
