"""Run-time choices that depend on the machine: precision, device name, safe checkpoint files."""

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
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MALLOC_MODES = ("auto", "reuse", "system")
# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or written; the message names the file."""


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU has native bf16 dot products (AVX-512 BF16 or AMX); autocast to bf16
    is then several times faster than fp32. Without them bf16 is emulated and slower."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in _BF16_CPU_FLAGS)


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    Lightning writes the final path directly, so a full disk or a kill mid-write would leave a
    truncated `last.ckpt` where the previous good one was. A failed write here raises
    CheckpointError naming the path and leaves the previous file untouched.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"could not write checkpoint {path}: {err.strerror or err}. "
                "The previous checkpoint (if any) is intact; free disk space or make the run "
                "directory writable, then resume with ckpt_path=last."
            ) from err

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path, map_location=map_location or "cpu")


class OnExceptionCheckpoint(Checkpoint):
    """Saves a full checkpoint (``dirpath/filename.ckpt``) when the run is interrupted: Ctrl-C,
    SIGTERM, an exception. A finished run removes it; ``ckpt_path=last`` resumes from it.

    Lightning's own `OnExceptionCheckpoint` does the same, but its presence also turns every
    ``trainer.fit(ckpt_path=None)`` into ``ckpt_path="last"``: a fresh run warned "was called
    without a model" and would silently resume whatever an earlier run left in a reused run
    directory. fruitnet decides what to resume (`resolve_ckpt_path`), so this one is a plain
    `Checkpoint`. It also gives `Trainer.save_checkpoint` its ``weights_only`` flag (False: save
    optimizer, loops and callbacks too, the checkpoint is a resume point; that flag chooses what
    to save, nothing is loaded), which Lightning's leaves unset and then logs about.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer, *args: Any, **kwargs: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)

    def teardown(self, trainer, *args: Any, **kwargs: Any) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True: pickled code in an untrusted file is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = (
                "it contains pickled Python objects, which fruitnet refuses to execute "
                f"(weights_only=True): {reason}"
            )
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def newest_checkpoint(directory: Path) -> Path | None:
    files = [p for p in Path(directory).glob("*.ckpt") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, runs_dir: Path | None) -> str | None:
    """`ckpt_path=last`: newest checkpoint of this run dir, else (when runs_dir is given) of the
    newest earlier run under runs_dir."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path != "last":
        load_checkpoint(ckpt_path)  # fail early, naming the file
        return str(ckpt_path)
    own = newest_checkpoint(Path(output_dir) / "checkpoints")
    if own is not None:
        return str(own)
    if runs_dir is None:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint in {Path(output_dir) / 'checkpoints'}"
        )
    candidates = [
        c
        for d in Path(runs_dir).glob("*/checkpoints")
        if d.parent != Path(output_dir) and (c := newest_checkpoint(d)) is not None
    ]
    if not candidates:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint in {Path(output_dir) / 'checkpoints'} "
            f"nor in any run under {runs_dir}"
        )
    return str(max(candidates, key=lambda p: p.stat().st_mtime_ns))
