"""Device-dependent defaults: precision auto, device names, checkpoint path resolution."""

from __future__ import annotations

import pytest
import torch

from fruitnet import runtime


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, "bf16-mixed"),
        ({"avx512f", "amx_bf16", "amx_tile"}, "bf16-mixed"),
        ({"avx2", "avx512f"}, "32-true"),
        (set(), "32-true"),
    ],
)
def test_precision_auto_on_cpu_follows_bf16_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert runtime.resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "bf16-mixed"), ((7, 5), "32-true")])
def test_precision_auto_on_gpu_follows_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert runtime.resolve_precision("auto", "gpu") == expected


def test_explicit_precision_is_kept():
    assert runtime.resolve_precision("16-mixed", "cpu") == "16-mixed"
    assert runtime.resolve_precision(32, "cpu") == 32


def test_cpu_flags_reads_this_machine():
    flags = runtime.cpu_flags()
    assert isinstance(flags, set)
    assert runtime.cpu_has_fast_bf16(flags) == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_ckpt_path_last_prefers_own_run_then_newest_earlier(tmp_path):
    runs = tmp_path / "runs"
    old, new, own = runs / "a", runs / "b", runs / "c"
    for d in (old, new):
        (d / "checkpoints").mkdir(parents=True)
        torch.save({"state_dict": {}}, d / "checkpoints" / "last.ckpt")
    assert runtime.resolve_ckpt_path("last", own, runs) == str(new / "checkpoints" / "last.ckpt")
    with pytest.raises(runtime.CheckpointError, match="no checkpoint"):
        runtime.resolve_ckpt_path("last", own, None)  # a multirun job looks only at itself
    (own / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, own / "checkpoints" / "last.ckpt")
    assert runtime.resolve_ckpt_path("last", own, runs) == str(own / "checkpoints" / "last.ckpt")
