"""What this machine offers the data pipeline: CPUs for loader workers, available RAM and free
disk, and from those whether the decoded-image cache is worth turning on."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

__all__ = [
    "CACHE_AUTO_SHARE",
    "auto_num_workers",
    "available_ram",
    "cache_fits",
    "free_disk",
    "loader_workers",
    "usable_cpus",
]

log = logging.getLogger(__name__)

# data.cache=auto turns the decoded-image cache on when the decoded set fits in this share of the
# free disk under the cache dir and of the available RAM.
CACHE_AUTO_SHARE = 0.5


def auto_num_workers(cpu_count: int | None = None) -> int:
    """DataLoader workers for this machine: ``min(4, cpus - 1)``, and 0 on 1-2 CPUs.

    On 2 cores, decoding 100x100 JPEGs is ~3 % of a basic-CNN epoch, so a worker process cannot
    win much, and it competes with the training step's own threads: measured on
    fruits-360-small, 0 and 1 workers were equal within noise. 0 also avoids forking.
    """
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if cpus <= 2:
        return 0
    return min(4, cpus - 1)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. under taskset or a batch
    scheduler), which is what torch's DataLoader compares its worker count with."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def loader_workers(value: int | str | None, cpu_count: int | None = None) -> int:
    """``data.num_workers`` as the loaders get it: "auto" (or null) is `auto_num_workers`; a
    number is capped at the usable CPUs, with one line saying so. More worker processes than
    CPUs only take turns on them (torch warns about it), and each costs a fork and its memory."""
    if value in ("auto", None):
        return auto_num_workers(cpu_count)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"data.num_workers must be auto or an integer >= 0, got {value!r}")
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise ValueError(f"data.num_workers must be auto or an integer >= 0, got {value!r}")
    cpus = cpu_count if cpu_count is not None else usable_cpus()
    if workers > cpus:
        log.warning(
            "data.num_workers=%d is more than the %d CPU(s) this process may use: using %d "
            "loader workers",
            workers,
            cpus,
            cpus,
        )
        return cpus
    return workers


def available_ram() -> int | None:
    """Bytes of RAM available without swapping (Linux MemAvailable, else free pages); None if
    unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def free_disk(path: Path) -> int | None:
    """Free bytes on the filesystem that holds ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    for p in (path, *path.parents):
        if p.exists():
            with contextlib.suppress(OSError):
                return shutil.disk_usage(p).free
            return None
    return None


def cache_fits(nbytes: int, cache_dir: Path) -> tuple[bool, int | None, int | None]:
    """``(fits, free disk, available RAM)``: `data.cache=auto` is on when the decoded set
    (``nbytes``) takes at most `CACHE_AUTO_SHARE` of the free disk under ``cache_dir`` and of
    the available RAM (the page cache must hold it for later epochs to skip the disk); off when
    neither is known."""
    disk = free_disk(cache_dir)
    ram = available_ram()
    limits = [b for b in (disk, ram) if b is not None]
    return bool(limits) and all(nbytes <= CACHE_AUTO_SHARE * b for b in limits), disk, ram
