"""bench/search.py (issue 21): the targets it places across the space, the goals it computes
(PASS and MISS both reachable), the report a partial run never writes over bench/SEARCH.md, and
a --quick run end to end (one search with several targets per dataset, the references, the
table, the front plot, the goals, no machine path)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import sys

import pytest
from helpers import REPO, cli

sys.path.insert(0, str(REPO / "bench"))
runs = importlib.import_module("benchlib.search_runs")
search_goals = importlib.import_module("benchlib.search_goals")
CASES = importlib.import_module("benchlib.common").load_cases("search")


def test_targets_sit_under_each_reference_and_span_the_space():
    lo, hi = 0.1, 1.0
    # A CNN, three small nets within 10 % of each other, a large one, two over the space's top
    refs = [0.27, 0.25, 0.28, 0.29, 0.64, 1.3, 2.7]
    targets = runs.place_targets(lo, hi, 5, refs)
    assert targets == sorted(targets) and 4 <= len(targets) <= 5
    assert all(lo <= t <= hi for t in targets)
    assert targets[0] < 0.2  # the front's small end, under every reference
    # Under every reference of the space, within 10 % of the nearest one under it
    for r in refs[:5]:
        under = [t for t in targets if t <= r]
        assert under and max(under) >= 0.85 * r, (r, targets)
    assert targets[-1] == pytest.approx(0.95, abs=0.011)  # the top stands for the two over it
    # Fewer targets allowed than references: both ends kept
    two = runs.place_targets(lo, hi, 2, refs)
    assert len(two) == 2 and two[0] < 0.2 and two[-1] >= 0.94
    # A space that starts above every reference: its bottom, nothing under it
    assert min(runs.place_targets(2.0, 4.0, 3, [1.0])) >= 2.0
    with pytest.raises(ValueError):
        runs.place_targets(2.0, 1.0, 3, [])


def test_duration_is_a_trainer_max_time():
    assert runs.duration(25) == "00:00:25:00"
    assert runs.duration(90.5) == "00:01:30:30"


def test_resume_keeps_a_finished_run_only_with_the_same_overrides(tmp_path):
    run_dir = tmp_path / "fruits_train_2_seed0"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=cnn\n- seed=0\n")
    assert runs.finished(run_dir) is None  # no results.json: it did not finish
    (run_dir / "results.json").write_text('{"test_acc": 0.9}')
    run_dir.with_name(f"{run_dir.name}.wall").write_text("12.5\n")
    kept = runs.finished(run_dir, ["model=cnn", "seed=0"])
    assert kept == {"test_acc": 0.9, "bench_wall_s": 12.5}
    # the case changed since (a new override, another value, another order): run it again
    assert runs.finished(run_dir, ["model=cnn", "seed=0", "model.kwargs.bn_momentum=0.1"]) is None
    assert runs.finished(run_dir, ["model=cnn", "seed=1"]) is None
    assert runs.finished(run_dir, ["seed=0", "model=cnn"]) is None
    # runs are named after their net, so another number of targets does not shift the references
    labels = [r["label"] for r in CASES["references"]] + ["searched 0.14 ms", "searched 0.9 ms"]
    assert len({runs.slug(label) for label in labels}) == len(labels)
    assert runs.slug("searched 0.14 ms") == "searched_0.14ms"


def _row(label, acc, std, ms, target=None):
    return {"label": label, "searched": target is not None, "target_ms": target,
            "acc_mean": acc, "acc_std": std, "ort_ms": ms}  # fmt: skip


def _verdicts(rows, dataset="fruits", minutes=20.0, searched=True):
    out = search_goals.goals(rows, {"searched": searched, "minutes": minutes}, dataset)
    return {g.split(" ", 1)[0] + (" " + g if g.startswith("(2) ") else ""): v for g, v, _ in out}


def test_goals_pass_when_the_front_dominates():
    rows = [
        _row("searched 1 ms", 0.95, 0.005, 0.98, target=1.0),
        _row("searched 3 ms", 0.97, 0.005, 2.9, target=3.0),
        _row("basic CNN", 0.92, 0.01, 1.04),
        _row("MobileNetV3-Large", 0.96, 0.01, 3.1),
    ]
    out = search_goals.goals(rows, {"searched": True, "minutes": 20.0}, "fruits")
    assert [v for _, v, _ in out] == ["PASS"] * len(out)
    assert len(out) == 1 + 1 + 2 + 1 + 1  # (1), (2) overall, (2) per reference, (3), (4)


def test_goal_2_counts_equal_accuracies_as_equal():
    """The same 3385 of 3 x 1140 test images right, read back from float32 metrics; one image
    fewer is a MISS."""
    resnet = [0.9868420958518982, 0.9903509020805359, 0.99210524559021]
    searched = [0.99210524559021, 0.9912280440330505, 0.9859648942947388]
    ref = _row("ResNet-18", sum(resnet) / 3, 0.002, 5.57)
    assert sum(searched) / 3 < ref["acc_mean"]
    tie = _row("searched 5.99 ms", sum(searched) / 3, 0.003, 3.71, target=5.99)
    assert search_goals.dominates([tie, ref], ref)[0]
    one_less = {**tie, "acc_mean": tie["acc_mean"] - 1 / (3 * 1140)}
    assert not search_goals.dominates([one_less, ref], ref)[0]


def test_goals_miss_on_spread_latency_and_time():
    rows = [
        # more accurate on the mean, but the seeds' spreads overlap: not beyond the spread
        _row("searched 1 ms", 0.93, 0.01, 1.0, target=1.0),
        # 20 % over its target
        _row("searched 3 ms", 0.95, 0.0, 3.6, target=3.0),
        _row("basic CNN", 0.92, 0.01, 1.04),
        # faster than every searched net: no searched net at or under its latency
        _row("ShuffleNetV2 x0.5", 0.90, 0.0, 0.5),
    ]
    out = {g: v for g, v, _ in search_goals.goals(rows, {"minutes": 31.0}, "fruits")}
    goal1 = next(g for g in out if g.startswith("(1)"))
    assert out[goal1] == "MISS"
    assert out["(2) basic CNN (1.04 ms)"] == "PASS"
    assert out["(2) ShuffleNetV2 x0.5 (0.50 ms)"] == "MISS"
    assert out[next(g for g in out if g.startswith("(2) at each"))] == "MISS"
    assert out[next(g for g in out if g.startswith("(3)"))] == "MISS"
    assert out[next(g for g in out if g.startswith("(4)"))] == "MISS"
    # goal (4) is about fruits-360-small only
    chest = search_goals.goals(rows, {"minutes": 31.0}, "chest")
    assert not any(g.startswith("(4)") for g, _, _ in chest)


def test_goal_3_scales_the_targets_by_the_references_drift():
    # the machine ran 1.5x slower in the final timing than when the targets were placed: a net
    # 1.5x over its target is on target, one on its target in ms is 33 % under
    rows = [
        _row("searched 1 ms", 0.95, 0.0, 1.5, target=1.0),
        _row("basic CNN", 0.92, 0.0, 1.5),
        _row("ResNet-18", 0.97, 0.0, 4.5),
    ]
    placed = {"basic CNN": 1.0, "ResNet-18": 3.0}
    assert search_goals.drift(rows[1:], placed) == pytest.approx(1.5)
    goal3 = [
        g for g in search_goals.goals(rows, {"minutes": 1.0}, "chest", placed) if "(3)" in g[0]
    ]
    assert goal3[0][1] == "PASS" and "times 1.50" in goal3[0][2] and "+50 %" in goal3[0][2]
    assert search_goals.goals(rows, {"minutes": 1.0}, "chest")[-1][1] == "MISS"  # unscaled
    rows[0]["ort_ms"] = 1.0
    assert search_goals.goals(rows, {"minutes": 1.0}, "chest", placed)[-1][1] == "MISS"


def test_a_search_without_architecture_steps_misses_everything():
    rows = [_row("basic CNN", 0.92, 0.01, 1.04)]
    out = search_goals.goals(rows, {"searched": False, "minutes": 5.0, "what_ran": "x"}, "fruits")
    assert out[0][:2] == ("the search made architecture steps", "MISS")
    assert "PASS" not in [v for _, v, _ in out]


def test_a_partial_run_never_writes_bench_search_md(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "bench" / "search.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # a folder with the chest set's splits stands in for the data: nothing is run
    args = ["--only", "chest", "--work", str(tmp_path), "--chest", str(tmp_path)]
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    parsed = bench.parse_args(args)
    assert parsed.out == tmp_path / "SEARCH.md"
    assert [d["name"] for d in parsed.datasets] == ["chest"]
    quick = bench.parse_args([*args, "--quick"])
    assert quick.seeds == 1 and quick.out == tmp_path / "SEARCH.md"


def test_retime_times_each_recorded_searched_net_once_a_call(tmp_path, capsys):
    """--retime on the committed chest records: one line of readings per call, one positive
    reading per searched net, smallest target first, and no report written."""
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "bench" / "search.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    records = sorted((REPO / "bench" / "runs" / "search").glob("chest_train_searched_*_seed0.json"))
    bench.main(["--only", "chest", "--chest", str(tmp_path), "--work", str(tmp_path),
                "--retime", "2", "--rounds", "1", "--repeats", "2"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    head, calls = lines[0], [line for line in lines if line.strip().startswith("call ")]
    labels = head.split("searched nets ")[1].split(";")[0].split()
    assert len(labels) == len(records) > 1
    assert [float(x.removesuffix("ms")) for x in labels] == sorted(
        float(x.removesuffix("ms")) for x in labels
    )
    assert len(calls) == 2
    for line in calls:
        readings = [float(x) for x in line.split(":")[1].split()]
        assert len(readings) == len(records) and all(r > 0 for r in readings)
    assert not (tmp_path / "SEARCH.md").exists()


@pytest.mark.slow  # a whole benchmark in subprocesses: about 4 min on a 2-core CPU
def test_search_bench_quick_writes_the_report(tmp_path, shared_data):
    out = tmp_path / "SEARCH.md"
    common = [
        "bench/search.py",
        "--quick",
        "--threads=1",  # a shared 2-core CI box: 2 OpenMP threads contend with each other
        f"--out={out}",
        f"--work={tmp_path / 'run'}",
        f"--fruits={shared_data / 'fruits-360-small'}",
        f"--chest={shared_data / 'chest_xray-small'}",
    ]
    # The references ahead (--references-only), then the rest with --resume: they are kept
    proc = cli(*common, "--references-only", cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not out.exists() and "--resume" in proc.stdout
    assert proc.stdout.count("fruitnet.train model=") == 4 and "fruitnet.search" not in proc.stdout
    assert (
        len(re.findall(r"(fruits|chest): basic CNN: test acc \d+\.\d\d ± 0\.00 %", proc.stdout))
        == 2
    )
    proc = cli(*common, "--resume", cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("finished in an earlier run, kept") == 4, proc.stdout
    text = out.read_text()
    assert "QUICK RUN" in text
    assert re.search(
        r"augmentation \([^)]*\): none \(fruits-360-small\) / `crop_erase` \(chest_xray-small\)",
        text,
    )
    for folder, name in [("fruits-360-small", "fruits"), ("chest_xray-small", "chest")]:
        assert f"## {folder}" in text
        assert (tmp_path / f"search_front_{name}.png").stat().st_size > 10_000
        assert f"](search_front_{name}.png)" in text
        section = text.split(f"## {folder}")[1].split("\n## ")[0]
        rows = [ln for ln in section.splitlines() if re.match(r"\| (searched|basic|Proxy)", ln)]
        searched = [r for r in rows if r.startswith("| searched")]
        # one search, two targets (--quick), each retrained; the two --quick references
        assert len(searched) == 2 and len(rows) == 4, section
        head = next(ln for ln in section.splitlines() if ln.startswith("| net |"))
        col = {c.strip(): i for i, c in enumerate(head.strip("|").split("|"))}
        # test AUROC beside accuracy for the binary set only
        assert ("test AUROC" in col) == (name == "chest"), head
        for r in rows:
            cells = [c.strip() for c in r.strip("|").split("|")]
            assert len(cells) == len(col), r
            assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", cells[col["test acc % (mean ± std)"]])
            assert float(cells[col["onnxruntime ms"]]) > 0
            assert float(cells[col["eager torch ms"]]) > 0
            if name == "chest":
                assert re.fullmatch(r"[01]\.\d{3} ± \d\.\d{3}", cells[col["test AUROC"]])
        # Every training on chest, the search and every retrain, gets the chest recipe's
        # augmentation
        trains = [ln for ln in text.splitlines() if ln.startswith(("python -m fruitnet.train ",
                                                                    "python -m fruitnet.search "))]  # fmt: skip
        mine = [ln for ln in trains if f"<{folder}>" in ln]
        assert len(mine) == 5
        assert all(("data.augment=crop_erase" in ln) == (name == "chest") for ln in mine), mine
        for goal in ("(1)", "(2) at each", "(3)"):
            assert re.search(rf"\| {re.escape(goal)}[^|]*\| (PASS|MISS) \|", section), goal
    assert re.search(r"\| fruits-360-small \| \(4\)[^|]*\| (PASS|MISS) \|", text)
    assert text.count("python -m fruitnet.search ") == 2  # ONE search per dataset
    assert "search.targets=[" in text
    for root in (str(tmp_path), "/work/", "/tmp/", "/home/"):
        assert root not in text
    # Every command left a record (no machine path in it): the next session, whose run folder is
    # gone, keeps them all and only times and reports
    records = sorted((tmp_path / "run" / "records").glob("*.json"))
    assert not any(str(tmp_path) in r.read_text() for r in records)
    placed = [r for r in records if r.name.endswith("_placement.json")]
    assert len(placed) == 2 and len(records) == 12, records  # per dataset 2 references,
    # 1 search, 2 searched nets, and where the search's targets were placed
    placement = json.loads(placed[1].read_text())  # fruits
    refs_ms = placement["refs_ms"]
    # the references were placed, and the search aimed, on one calibration's scale
    search = json.loads((tmp_path / "run" / "records" / "fruits_search.json").read_text())
    assert placement["yardstick"]["ms"] > 0 and placement["yardstick"]["arch"]
    assert search["results"]["latency_yardstick"] == placement["yardstick"]
    assert text.count("on the calibration's scale: each reading against") == 2
    for item in (tmp_path / "run").iterdir():
        if item.name not in ("records", "cache"):
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    proc = cli(*common, "--resume", "--only=fruits", cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("kept from its record") == 5
    assert not re.search(r"^\+ ", proc.stdout, re.M)  # no command ran
    text = out.read_text()
    assert "## fruits-360-small" in text
    # the references' latency when the targets were placed, not a new timing (goal 3 scales by it)
    assert all(f"{label} {ms:.2f}" in text for label, ms in refs_ms.items()), (refs_ms, text)


def test_every_reference_builds_from_its_overrides_as_train_builds_it():
    import torch

    for ref in CASES["references"]:
        net = runs.build_reference(ref["overrides"], 3, 64)
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3), ref["label"]
        if "model.kwargs.bn_momentum=0.1" in ref["overrides"]:
            norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            assert norms and {m.momentum for m in norms} == {0.1}, ref["label"]


def test_resume_runs_a_changed_command_again_in_a_clean_folder(tmp_path):
    """Runner: a finished command with the same overrides is kept; a changed one runs again, its
    old folder set aside (no stale checkpoint beside the new ones)."""
    import types

    # a stand-in for fruitnet.train: records its overrides as Hydra does and writes results.json
    (tmp_path / "fake_train.py").write_text(
        "import json, sys, pathlib\n"
        "args = sys.argv[1:]\n"
        "run = pathlib.Path(args[-1].split('=', 1)[1])\n"
        "(run / '.hydra').mkdir(parents=True)\n"
        "(run / '.hydra' / 'overrides.yaml').write_text(''.join(f'- {a}\\n' for a in args[:-1]))\n"
        "(run / 'results.json').write_text(json.dumps({'overrides': args[:-1]}))\n"
    )
    args = types.SimpleNamespace(work=tmp_path, threads=1, resume=True)
    runner = runs.Runner(args, {})
    runner.env["PYTHONPATH"] = str(tmp_path)
    run_dir = tmp_path / "fruits_train_basic_cnn_seed0"
    first = runner("fake_train", ["model=cnn", "seed=0"], run_dir, {})
    assert first["overrides"] == ["model=cnn", "seed=0"] and "bench_kept" not in first
    (run_dir / "stale.ckpt").write_text("old")
    kept = runner("fake_train", ["model=cnn", "seed=0"], run_dir, {})
    assert kept["bench_kept"] and (run_dir / "stale.ckpt").exists()
    changed = runner("fake_train", ["model=cnn", "seed=0", "model.lr=2"], run_dir, {})
    assert changed["overrides"][-1] == "model.lr=2" and "bench_kept" not in changed
    assert not (run_dir / "stale.ckpt").exists()
    assert (tmp_path / "fruits_train_basic_cnn_seed0.superseded1" / "stale.ckpt").exists()
    # rerun=True (its search ran again) runs even an unchanged command
    again = runner("fake_train", ["model=cnn", "seed=0", "model.lr=2"], run_dir, {}, rerun=True)
    assert "bench_kept" not in again
    assert (tmp_path / "fruits_train_basic_cnn_seed0.superseded2").is_dir()


def test_a_record_keeps_a_finished_run_whose_folder_is_gone(tmp_path):
    """The bench outlives its run folder: a finished command's record (no machine path) keeps it
    on --resume in another folder, on another machine; the search's arch files come back for
    its retrains; a changed command runs again."""
    import json
    import shutil
    import types
    from pathlib import Path

    # a stand-in for fruitnet.search: results.json naming its arch file, which it writes
    (tmp_path / "fake_search.py").write_text(
        "import json, sys, pathlib\n"
        "args = sys.argv[1:]\n"
        "run = pathlib.Path(args[-1].split('=', 1)[1])\n"
        "(run / '.hydra').mkdir(parents=True)\n"
        "(run / '.hydra' / 'overrides.yaml').write_text(''.join(f'- {a}\\n' for a in args[:-1]))\n"
        "(run / 'arch_1ms.json').write_text('{\"blocks\": 3}')\n"
        "(run / 'results.json').write_text(json.dumps({'overrides': args[:-1], 'acc': 0.5,\n"
        "    'front': [{'arch_path': str(run / 'arch_1ms.json')}]}))\n"
    )
    record = tmp_path / "record"

    def runner(work: Path):
        args = types.SimpleNamespace(work=work, threads=1, resume=True, record=record)
        r = runs.Runner(args, {})
        r.env["PYTHONPATH"] = str(tmp_path)
        return r

    work, data = tmp_path / "a" / "work", tmp_path / "a" / "data"
    places = {work: "<run>", data: "<data>"}
    first = runner(work)("fake_search", ["x=1", f"data.root={data}"], work / "s", places)
    assert "bench_kept" not in first and first["net"] is None  # no checkpoint: no net to rebuild
    text = (record / "s.json").read_text()
    assert str(tmp_path) not in text, text
    assert json.loads(text)["overrides"] == ["x=1", "data.root=<data>"]
    shutil.rmtree(tmp_path / "a")  # the next session: a new machine, other folders
    work, data = tmp_path / "b" / "work", tmp_path / "b" / "data"
    places = {work: "<run>", data: "<data>"}
    again = runner(work)
    kept = again("fake_search", ["x=1", f"data.root={data}"], work / "s", places)
    assert kept["bench_kept"] and kept["acc"] == 0.5
    assert kept["bench_wall_s"] == pytest.approx(first["bench_wall_s"], abs=1e-3)
    arch = Path(kept["front"][0]["arch_path"])
    assert arch == work / "s" / "arch_1ms.json" and arch.read_text() == '{"blocks": 3}'
    assert kept["overrides"] == ["x=1", f"data.root={data}"]
    assert again.earlier(work / "t", places) is None
    assert again.earlier(work / "s", places)["acc"] == 0.5
    # another command in that run folder is not the recorded one: it runs (and is recorded)
    changed = again("fake_search", ["x=2", f"data.root={data}"], work / "s", places)
    assert "bench_kept" not in changed and changed["overrides"][0] == "x=2"
    assert json.loads((record / "s.json").read_text())["overrides"][0] == "x=2"


def test_status_lists_each_search_and_net_from_the_records(tmp_path):
    record = importlib.import_module("benchlib.search_record")
    for seed, acc in enumerate([0.5, 0.7]):
        run_dir = tmp_path / "work" / f"chest_train_basic_cnn_seed{seed}"
        record.save(
            tmp_path / "r", run_dir, ["model=cnn"], {"test_acc": acc, "bench_wall_s": 60}, {}
        )
    search = {"targets_ms": [0.5, 1.0], "arch_steps": 12, "bench_wall_s": 300}
    record.save(tmp_path / "r", tmp_path / "work" / "chest_search", [], search, {})
    assert record.status(tmp_path / "r") == [
        "chest_search: targets [0.5, 1.0] ms, 12 architecture steps, 5.0 min",
        "chest_train_basic_cnn: test acc 60.00 ± 10.00 % over 2 seed(s), 1.0 min a retrain",
    ]


def test_a_recorded_net_rebuilds_for_timing_as_a_checkpoint_loads():
    import torch

    record = importlib.import_module("benchlib.search_record")
    spec = {"model_name": "cnn", "num_classes": 3, "input_size": 32, "model_kwargs": {},
            "preprocess": {"resize": 32, "crop": None, "size": 32}}  # fmt: skip
    net, pre = record.build_net(spec)
    assert not net.training and pre == spec["preprocess"]  # timed as exported: eval mode
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_one_op_arch_puts_the_op_on_every_edge(tmp_path):
    from fruitnet.models.net_config import load_arch

    one_op = importlib.import_module("one_op_arch")
    out = tmp_path / "arch.json"
    one_op.main(["3x3_FusedMBConv2", str(out), "first_conv=16", "widths=[8,16,16,16,32]"])
    arch = load_arch(out, 100)
    ops = [b["mobile_inverted_conv"] for b in arch["blocks"][1:]]
    assert len(ops) == 14 and {o["name"] for o in ops} == {"FusedMBConvLayer"}
    assert {o["expand_ratio"] for o in ops} == {2} and arch["first_conv"]["out_channels"] == 16
