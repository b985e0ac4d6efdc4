"""Device-dependent defaults: precision auto, the host allocator, device names, checkpoint paths."""

from __future__ import annotations

import platform
import subprocess
import sys

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


# A 64 MiB buffer (over glibc's largest mmap threshold) allocated, filled and freed 5 times:
# page faults of the last 4 rounds, after the first one has warmed the allocator.
_FAULTS = """
import resource, sys, torch
from fruitnet.runtime import configure_malloc
print(configure_malloc(sys.argv[1], "cpu"))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# Two warm-up steps: the heap can still grow once in the second (the intra-op thread pool
# starts in the first step's sum and its allocations can land above the freed block).
for i in range(8):
    if i == 2:
        start = faults()
    torch.ones(16 * 2**20).sum()
print(faults() - start)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_malloc_reuse_stops_the_page_faults_of_big_tensors():
    out = {}
    for mode in ("system", "reuse"):
        proc = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        applied, faults = proc.stdout.split()
        out[mode] = (applied == "True", int(faults))
    # 6 x 64 MiB of fresh pages is 98,304 faults of 4 KiB; reused memory faults almost never.
    assert out["system"][0] is False and out["system"][1] > 50_000, out
    assert out["reuse"][0] is True and out["reuse"][1] < 2_000, out


def test_malloc_auto_leaves_gpu_runs_alone_and_bad_modes_are_named():
    assert runtime.configure_malloc("auto", "gpu") is False
    assert runtime.configure_malloc("system", "cpu") is False
    with pytest.raises(ValueError, match="malloc must be one of"):
        runtime.configure_malloc("jemalloc", "cpu")
