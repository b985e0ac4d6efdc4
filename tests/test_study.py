"""`python -m fruitnet.study`: the protocol, its plan (weights, estimate), skip/resume, study.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fruitnet import study_plan as sp
from fruitnet.study_report import study_markdown, write_study_report

STUDY = [sys.executable, "-m", "fruitnet.study"]
PRETRAINED = ["study_resnet50", "study_proxyless_raw", "study_proxyless_norm", "best_resnet50",
              "best_proxyless"]  # fmt: skip


def _study(args, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*STUDY, *args], cwd=cwd, capture_output=True, text=True, **kw)


def test_protocol_order_subset_and_errors():
    names = [r.name for r in sp.protocol("fruits", None)]
    assert names == ["study_cnn_stage1", "study_cnn_stage2", *PRETRAINED[:3], "best_cnn",
                     *PRETRAINED[3:]]  # fmt: skip
    assert [r.name for r in sp.protocol("chest_xray", None)][:2] == [
        "chest_cnn_stage1",
        "chest_cnn_stage2",
    ]
    subset = sp.protocol("fruits", ["best_cnn", "study_cnn_stage1"])
    assert [r.name for r in subset] == ["study_cnn_stage1", "best_cnn"]
    with pytest.raises(sp.StudyError, match=r"study.runs: \['nope'\]"):
        sp.protocol("fruits", ["nope"])
    with pytest.raises(sp.StudyError, match="data=folder"):
        sp.protocol("folder", None)


def test_stage2_continues_stage1_then_its_own_checkpoint(tmp_path):
    stage2 = sp.protocol("fruits", ["study_cnn_stage2"])[0]
    args = sp.train_overrides(stage2, tmp_path, ["data.root=/d"], 3, 5)
    assert f"ckpt_path={tmp_path / 'study_cnn_stage1' / 'checkpoints' / 'last.ckpt'}" in args
    assert f"hydra.run.dir={tmp_path / 'study_cnn_stage2'}" in args
    assert "trainer.max_epochs=6" in args  # absolute: stage 1's 3 + 3
    assert f"tracking_group=study/{tmp_path.name}" in args  # one tracker experiment per study
    assert "callbacks.model_checkpoint.every_n_train_steps=5" in args
    own = tmp_path / "study_cnn_stage2" / "checkpoints" / "last.ckpt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"x")
    assert sp.state(own.parent.parent) == "partial"
    assert f"ckpt_path={own}" in sp.train_overrides(stage2, tmp_path, [], None, None)
    stage1 = sp.protocol("fruits", ["study_cnn_stage1"])[0]
    assert "ckpt_path=null" in sp.train_overrides(stage1, tmp_path, [], None, None)
    (own.parent.parent / "results.json").write_text("{}")
    assert sp.state(own.parent.parent) == "done"


def _record(folder: Path, **values) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"kind": "train", **values}))


def test_report_rows_reference_and_difference(tmp_path):
    runs = sp.protocol("fruits", None)
    _record(tmp_path / "study_cnn_stage2", test_acc=0.9, weights_mb=11.59, num_classes=95,
            epochs=40, wall_s=100.0, device="cpu: X", precision="32-true", data_root="/d")  # fmt: skip
    text, rows = study_markdown("fruits", runs, tmp_path)
    assert len(rows) == len(runs)
    line = next(x for x in text.splitlines() if x.startswith("| `study_cnn_stage2`"))
    assert "| 94.85 | 90.00 | -4.85 | 11.68 | 11.59 | -0.09 | 40 |" in line
    assert "Not the study's release" in text and "131" in text
    assert "| `best_proxyless` | 99.22 | – |" in text  # not run yet, still a row
    path = write_study_report("fruits", runs, tmp_path)
    assert path.read_text() == text and (tmp_path / "study.png").stat().st_size > 1000


def test_chest_report_has_kermany_anchor(tmp_path):
    runs = sp.protocol("chest_xray", None)
    _record(tmp_path / "chest_resnet50", test_acc=0.9, test_recall=0.95, test_specificity=0.8,
            test_auroc=0.93, weights_mb=90.0, num_classes=2)  # fmt: skip
    text, _ = study_markdown("chest_xray", runs, tmp_path)
    assert "| Kermany et al. 2018 (InceptionV3) | 92.8 | | 93.2 | | 90.1 |" in text
    line = next(x for x in text.splitlines() if x.startswith("| `chest_resnet50`"))
    assert "| 90.00 | -2.80 | 95.00 | +1.80 | 80.00 | -10.10 | 0.930 |" in line


def test_plan_reports_every_missing_weight_before_training(tmp_path, shared_data):
    root = shared_data / "fruits-360-small"
    base = ["data=fruits", f"data.root={root}", "study.estimate=false"]
    dry = _study([*base, "study.dry_run=true"], tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    for name in PRETRAINED:
        line = next(x for x in dry.stdout.splitlines() if x.strip().startswith(name))
        assert line  # the run is in the plan ...
    assert dry.stdout.count("FRUITNET_OFFLINE is set") == len(PRETRAINED)  # ... each one named
    real = _study(base, tmp_path)
    assert real.returncode == 1
    assert "pretrained weights missing for " + ", ".join(PRETRAINED) in real.stdout + real.stderr
    assert not (tmp_path / "logs" / "study" / "fruits" / "study_cnn_stage1").exists()


def test_chest_protocol_plan(tmp_path, shared_data):
    root = shared_data / "chest_xray-small"
    out = _study(["data=chest_xray", f"data.root={root}", "study.dry_run=true",
                  "study.estimate=false", 'study.overrides=["model.pretrained=auto"]'], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Study plan: chest_xray, 5 runs" in out.stdout
    assert "chest_cnn_stage2 after chest_cnn_stage1" in out.stdout
    assert "FRUITNET_OFFLINE" not in out.stdout  # pretrained=auto: nothing missing
    report = _study(["data=chest_xray", "study.report_only=true"], tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    md = (tmp_path / "logs" / "study" / "chest_xray" / "study.md").read_text()
    assert "Kermany" in md and md.count("| `chest_") == 5


# Small enough for 2 CPU cores: batches of 16, 3 steps an epoch, 1 epoch (stage 2: epoch 2)
FAST = ["study.estimate=false", "study.epochs=1", "study.checkpoint_every_n_steps=1",
        'study.overrides=["model.pretrained=auto","data.batch_size=16",'
        '"trainer.limit_train_batches=3","trainer.limit_val_batches=1","trainer.limit_test_batches=1"]']  # fmt: skip


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_study_resumes_to_the_uninterrupted_weights(tmp_path, shared_data):
    data = ["data=fruits", f"data.root={shared_data / 'fruits-360-small'}"]
    ref = _study([*data, *FAST, "study.runs=[study_cnn_stage1,study_cnn_stage2]",
                  f"study.root={tmp_path / 'ref'}"], tmp_path)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]

    command = [*STUDY, *data, *FAST, f"study.root={tmp_path / 'study'}"]
    folder = tmp_path / "study" / "study_cnn_stage2"
    proc = subprocess.Popen(command, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (folder / "checkpoints" / "last.ckpt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "stage 2 never checkpointed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the study itself, as a lost allocation would
    proc.wait()
    while time.monotonic() < deadline:  # its training process dies with it (PDEATHSIG)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the training process outlived the killed study")
    assert not (folder / "results.json").exists(), "killed too late: stage 2 had finished"

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "study_cnn_stage1: finished, skipped" in again.stdout
    assert "study_cnn_stage2 after study_cnn_stage1 (resumes its last.ckpt)" in again.stdout
    resumed = _weights(folder / "checkpoints" / "last.ckpt")
    reference = _weights(tmp_path / "ref" / "study_cnn_stage2" / "checkpoints" / "last.ckpt")
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
    md = (tmp_path / "study" / "study.md").read_text()
    for run in sp.protocol("fruits", None):
        assert f"| `{run.name}` |" in md and md.count(f"| `{run.name}` |") == 1
    assert md.count("| done |") == len(sp.protocol("fruits", None))


@pytest.mark.slow
def test_plan_estimate_of_the_cnn_within_30_percent(tmp_path, shared_data):
    out = _study(["data=fruits", f"data.root={shared_data / 'fruits-360-small'}",
                  "study.runs=[study_cnn_stage1]", "study.epochs=4"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    timing = json.loads(
        (tmp_path / "logs/study/fruits/study_cnn_stage1/study_time.json").read_text()
    )
    ratio = timing["estimate_s"] / timing["measured_s"]
    print(f"estimate {timing['estimate_s']:.1f} s, measured {timing['measured_s']:.1f} s")
    assert 0.7 <= ratio <= 1.3, timing


@pytest.mark.slow  # two training processes through a Hydra launcher, twice: 30 s
def test_through_a_hydra_launcher_stage2_waits_and_a_rerun_skips(tmp_path, shared_data):
    args = ["data=fruits", f"data.root={shared_data / 'fruits-360-sample'}", "study.launcher=basic",
            "study.runs=[study_cnn_stage1,study_cnn_stage2]", "study.estimate=false",
            "study.epochs=1", 'study.overrides=["data.batch_size=16","trainer.limit_train_batches=1",'
            '"trainer.limit_val_batches=1","trainer.limit_test_batches=1"]']  # fmt: skip
    first = _study(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "logs" / "study" / "fruits"
    stage1, stage2 = (json.loads((root / n / "results.json").read_text())
                      for n in ("study_cnn_stage1", "study_cnn_stage2"))  # fmt: skip
    assert stage2["resumed_from"] == str(root / "study_cnn_stage1" / "checkpoints" / "last.ckpt")
    assert (stage1["epochs"], stage2["epochs"]) == (1, 2)
    again = _study(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished, skipped") == 2
    assert "fruitnet.train" not in again.stdout + again.stderr  # nothing launched
