"""Run-time choices that depend on the machine: precision, the host allocator, the device name."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from fruitnet.settings import MALLOC_MODES

log = logging.getLogger(__name__)

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None, capability: str | None = None) -> bool:
    """True when the CPU has native bf16 dot products (AVX-512 BF16 or AMX) and torch runs its
    AVX-512 kernels; autocast to bf16 is then several times faster than fp32. Without them bf16
    is emulated and slower: on an older CPU, and where torch is held to its AVX2 kernels
    (``ATEN_CPU_CAPABILITY=avx2``, which is how to check this machine's fp32 path)."""
    flags = cpu_flags() if flags is None else flags
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith("AVX512") and any(f in flags for f in _BF16_CPU_FLAGS)


def uses_cuda(accelerator: str | None) -> bool:
    accelerator = (accelerator or "auto").lower()
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(precision: Any, accelerator: str | None = "auto") -> Any:
    """`precision="auto"` -> bf16-mixed where the device runs it fast, else 32-true."""
    if str(precision) != "auto":
        return precision
    if uses_cuda(accelerator):
        major, _ = torch.cuda.get_device_capability()
        return "bf16-mixed" if major >= 8 else "32-true"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def configure_malloc(mode: str = "auto", accelerator: str | None = "auto") -> bool:
    """`malloc=reuse` (and `auto` when training on the CPU): glibc keeps freed memory for reuse.

    By default glibc serves every buffer above its mmap threshold (128 KiB, rising to at most
    32 MiB) with a fresh ``mmap`` and unmaps it on free, so a training step page-faults on all
    its large activations and gradients again, every step: the basic CNN at batch 128 took
    ~50,000 page faults per step on the 2-core CPU and ran 1.5x slower than with this (see
    bench/README.md). Turning off mmap for allocations and never trimming the heap lets the
    same memory serve every step; the peak footprint stays the same. What jemalloc or tcmalloc
    via LD_PRELOAD would give, without a preload. Process-wide; returns whether it applied
    (False off glibc Linux, for ``system``, and for ``auto`` on a GPU, where host tensors are small).
    """
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc must be one of {MALLOC_MODES}, got {mode!r}")
    if mode == "system" or (mode == "auto" and uses_cuda(accelerator)):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError) as err:  # pragma: no cover - glibc always has mallopt
        log.debug("malloc=%s: mallopt unavailable: %s", mode, err)
        return False
    if ok:
        log.debug("malloc=%s: glibc keeps freed memory for reuse (no mmap, no trim)", mode)
    return ok


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(accelerator: str | None = "auto") -> str:
    if uses_cuda(accelerator) and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {cpu_name()} ({os.cpu_count()} cores)"
