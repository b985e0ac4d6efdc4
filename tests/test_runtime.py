"""Device-dependent defaults: precision auto, the host allocator, device names."""

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
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert runtime.resolve_precision("auto", "cpu") == expected


def test_precision_auto_is_fp32_where_torch_runs_its_avx2_kernels(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 on a BF16 CPU: bf16 would be emulated."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert runtime.resolve_precision("auto", "cpu") == "32-true"


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
    expected = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert runtime.cpu_has_fast_bf16(flags, "AVX512") == expected
    assert runtime.cpu_has_fast_bf16(flags, "AVX2") is False


# A 64 MiB buffer (over glibc's largest mmap threshold) allocated, filled and freed: the page
# faults of 6 rounds with glibc's defaults, then of 6 rounds after malloc=reuse, in one process
# (glibc's defaults come first: reuse cannot be undone). Six warm-up rounds before each count:
# the heap can still grow in the first ones (the intra-op thread pool, torch's lazy one-time
# allocations land above the freed block); after that it is steady.
_FAULTS = """
import resource, sys, torch
from fruitnet.runtime import configure_malloc
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rounds():
    for i in range(12):
        if i == 6:
            start = faults()
        torch.ones(16 * 2**20).sum()
    return faults() - start
print(configure_malloc("system", "cpu"), rounds())
print(configure_malloc("reuse", "cpu"), rounds())
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_malloc_reuse_stops_the_page_faults_of_big_tensors():
    proc = subprocess.run(
        [sys.executable, "-c", _FAULTS], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = {}
    for mode, line in zip(("system", "reuse"), proc.stdout.splitlines(), strict=True):
        applied, faults = line.split()
        out[mode] = (applied == "True", int(faults))
    # 6 x 64 MiB of fresh pages is 98,304 faults of 4 KiB; reused memory faults almost never.
    assert out["system"][0] is False and out["system"][1] > 50_000, out
    assert out["reuse"][0] is True and out["reuse"][1] < 2_000, out


def test_malloc_auto_leaves_gpu_runs_alone_and_bad_modes_are_named():
    assert runtime.configure_malloc("auto", "gpu") is False
    assert runtime.configure_malloc("system", "cpu") is False
    with pytest.raises(ValueError, match="malloc must be one of"):
        runtime.configure_malloc("jemalloc", "cpu")
