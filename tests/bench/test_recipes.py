"""bench/recipes.py's logic (budget split, seed aggregation, joined stage curves) and the
last.ckpt it resumes from; not the measured numbers."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, train

from fruitnet import report
from fruitnet.data import generate_synthetic_fruits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

sys.path.insert(0, str(REPO / "bench"))  # bench/benchlib: the code behind bench/recipes.py
plan = importlib.import_module("benchlib.recipe_plan")
runs_mod = importlib.import_module("benchlib.recipe_runs")
stats = importlib.import_module("benchlib.recipe_stats")


def test_stage_caps_split_the_budget_by_epochs_and_end_at_the_budget():
    assert stats.stage_caps(90, [20, 20]) == [45.0, 90.0]
    assert stats.stage_caps(60, [10, 20]) == [20.0, 60.0]
    assert stats.stage_caps(75, [40]) == [75.0]
    with pytest.raises(ValueError):
        stats.stage_caps(60, [20, 0])


def test_max_time_is_lightnings_format():
    assert stats.max_time(90) == "00:00:01:30"
    assert stats.max_time(3725.4) == "00:01:02:05"
    assert stats.max_time(0.2) == "00:00:00:01"


def test_spread_and_verdict():
    s = stats.spread([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    assert (s["min"], s["max"], s["n"]) == (0.5, 0.7, 3)
    assert stats.spread([0.4])["std"] == 0.0
    assert math.isnan(stats.spread([])["mean"])
    assert "**beats**" in stats.verdict([0.5, 0.55, 0.6], [0.7, 0.75, 0.8])
    # overlapping ranges: better mean, but not beyond the spread
    assert "**within**" in stats.verdict([0.5, 0.6, 0.75], [0.7, 0.75, 0.8])
    assert "**loses**" in stats.verdict([0.7, 0.8], [0.5, 0.6])
    assert "one seed" in stats.verdict([0.5], [0.6])
    assert "not measured" in stats.verdict([], [0.6])


def test_combine_stages_sums_times_and_keeps_the_last_stage():
    first = {"epochs": 5, "wall_s": 50.0, "process_s": 60.0, "test_acc": None}
    second = {"epochs": 9, "wall_s": 45.0, "process_s": 55.0, "test_acc": 0.5, "val_acc": 0.6}
    out = stats.combine_stages([first, second])
    assert out["test_acc"] == 0.5 and out["epochs"] == 9
    assert out["wall_s"] == 95.0 and out["process_s"] == 115.0
    assert out["stage_epochs"] == [5, 9]


def test_command_stage1_is_untested_and_capped(tmp_path):
    comp = next(c for c in plan.COMPARISONS if c.key == "chest_cnn")
    cmd = runs_mod.command(comp, comp.study, 0, 1, tmp_path / "data", tmp_path / "run", 20.0)
    assert "experiment=chest_cnn_stage1" in cmd and "data=folder" in cmd
    assert "trainer.max_time=00:00:00:20" in cmd and "test=false" in cmd and "seed=1" in cmd
    last = runs_mod.command(comp, comp.study, 1, 1, tmp_path / "data", tmp_path / "run", 40.0)
    assert "test=false" not in last and "experiment=chest_cnn_stage2" in last


def _metrics_csv(run: Path, epochs: range, base: float) -> Path:
    (run / "csv").mkdir(parents=True)
    lines = ["epoch,step,train/loss_epoch,train/acc,val/loss,val/acc"]
    for e in epochs:
        lines.append(f"{e},{e},,,{base - e / 10},{base / 2 + e / 20}")
        lines.append(f"{e},{e},{base - e / 10},{e / 10},,")
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_curves_join_the_stages_into_one_line(tmp_path):
    stage1 = _metrics_csv(tmp_path / "s1", range(0, 2), 2.0)
    stage2 = _metrics_csv(tmp_path / "s2", range(2, 4), 2.0)  # a resumed run goes on counting
    other = _metrics_csv(tmp_path / "b", range(0, 3), 1.0)
    rows = [runs_mod.joined_rows([stage1, stage2]), runs_mod.joined_rows([other])]
    runs = [{"label": "study s0", "color": "#1f77b4"}, {"label": "best s0", "color": "#ff7f0e"}]
    png = report.write_curves(runs, tmp_path / "out" / "c.png", rows=rows, title="t")
    assert png.read_bytes().startswith(PNG_MAGIC)
    fig = report.curves_figure(runs, report.CURVE_PANELS, rows=rows, title="t")
    assert fig.get_suptitle() == "t"
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [t for _, t in report.CURVE_PANELS]
    study_acc, best_acc = fig.axes[2].get_lines()
    assert study_acc.get_xdata().tolist() == [1, 2, 3, 4]  # epochs 0..3 plotted from 1
    assert study_acc.get_ydata().tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert best_acc.get_color() == "#ff7f0e" and len(best_acc.get_xdata()) == 3


def test_report_cli_writes_curves(tmp_path):
    run = _metrics_csv(tmp_path / "logs" / "r1", range(0, 2), 2.0)
    (run / "results.json").write_text('{"model": "cnn", "test_acc": 0.5}')
    assert report.main([str(tmp_path / "logs"), "--out", str(tmp_path / "o"), "--curves"]) == 0
    assert (tmp_path / "o" / "curves.png").read_bytes().startswith(PNG_MAGIC)


def test_last_ckpt_is_the_last_epoch_when_val_acc_does_not_improve(tmp_path, data_dir):
    """Lightning 2.6 refreshes last.ckpt only with a new top-k; the study's stage 2 and
    ckpt_path=last resume from it, so it must hold the last epoch. lr=0: val/acc never improves."""
    tiny = {"num_classes": 3, "train_per_class": 12, "test_per_class": 4, "image_size": 32}
    generate_synthetic_fruits(data_dir / "synthetic", **tiny, seed=0)
    overrides = [
        "data=synthetic",
        *(f"data.{k}={v}" for k, v in tiny.items()),
        "data.batch_size=8",
        "optimizer.lr=0.0",
        "trainer.max_epochs=3",
        "test=false",
    ]
    results = train(overrides, tmp_path, data_dir)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == results["global_step"]


# --------------------------------------------------------------------------- time-budget schedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_cycle_lr_matches_torch_onecycle_shape():
    from torch.optim.lr_scheduler import OneCycleLR

    from fruitnet.schedules import one_cycle_lr

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = OneCycleLR(opt, max_lr=0.1, total_steps=101, pct_start=0.25)
    expected = []
    for _ in range(101):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step() if len(expected) < 101 else None
    # torch peaks at step pct_start * total_steps - 1 of total_steps - 1 intervals: 24.25 / 100
    got = [one_cycle_lr(i / 100, 0.1, 0.2425, 25.0, 1e4) for i in range(101)]
    assert got[-1] == pytest.approx(0.1 / 25 / 1e4)
    assert got == pytest.approx(expected, rel=1e-6)


def test_time_budget_one_cycle_follows_the_clock_and_resumes():
    from fruitnet.schedules import TimeBudgetOneCycle

    clock = FakeClock()
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.003)
    sched = TimeBudgetOneCycle(opt, max_lr=0.003, budget_s=60, pct_start=0.25, clock=clock)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003 / 25)  # start of the warm-up
    clock.now += 15  # a quarter of the budget: the peak, however many steps that took
    opt.step()  # torch warns when the scheduler steps first
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003)
    clock.now += 15
    opt.step()
    sched.step()
    mid = opt.param_groups[0]["lr"]
    assert mid == pytest.approx(0.003 * 0.75, rel=1e-3)  # a third down the cosine: 3/4 of peak
    state = sched.state_dict()
    assert state["elapsed_s"] == pytest.approx(30) and "_clock" not in state
    torch.save(state, tmp := Path(__file__).parent / ".state.pt")  # plain numbers: weights_only
    try:
        loaded = torch.load(tmp, weights_only=True)
    finally:
        tmp.unlink()
    clock2 = FakeClock()
    opt2 = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.003)
    resumed = TimeBudgetOneCycle(opt2, max_lr=0.003, budget_s=60, clock=clock2)
    resumed.load_state_dict(loaded)
    opt2.step()
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(mid)
    clock2.now += 1000  # past the budget: stays at the floor
    opt2.step()
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.003 / 25 / 1e4)
    with pytest.raises(ValueError):
        TimeBudgetOneCycle(opt, max_lr=0.1, budget_s=0)


def test_load_runs_reads_stages_and_shared_study_runs(tmp_path):
    def write(rel: str, **res) -> None:
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "results.json").write_text(json.dumps(res))

    write("fruits_cnn/study_seed0/stage1", epochs=3, wall_s=40.0, test_acc=None)
    write("fruits_cnn/study_seed0/stage2", epochs=6, wall_s=41.0, test_acc=0.1, seed=0)
    write("fruits_cnn_budget/best_seed0/stage1", epochs=4, wall_s=80.0, test_acc=0.5, seed=0)
    # seed 1 of the study never finished its stage 2: left out, not half-read
    write("fruits_cnn/study_seed1/stage1", epochs=3, wall_s=40.0, test_acc=None)
    entry = {"key": "fruits_cnn_budget", "budget_s": 75, "seeds": [0, 1], "machine": ["AMD EPYC"]}
    manifest = {"comparisons": [entry]}
    done, runs = runs_mod.load_manifest(tmp_path, manifest)
    assert [c.key for c in done] == ["fruits_cnn_budget"] and done[0].seeds == (0, 1)
    study, best = runs["fruits_cnn_budget"]["study"], runs["fruits_cnn_budget"]["best"]
    assert len(study) == 1 and study[0]["wall_s"] == 81.0 and study[0]["stage_epochs"] == [3, 6]
    assert study[0]["run_dirs"][0].endswith("fruits_cnn/study_seed0/stage1")
    assert len(best) == 1 and best[0]["test_acc"] == 0.5
    assert best[0]["machine"] == "AMD EPYC"  # --render's runs keep the machine the manifest saw
