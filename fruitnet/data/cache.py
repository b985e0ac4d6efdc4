"""Decoded-image cache: every image of a split decoded once into one uint8 ``.npy`` on disk.

Datasets yield uint8 ``3 x S x S`` tensors (see docs/ARCHITECTURE.md), so a split can be stored
as one ``N x 3 x S x S`` array. Later epochs and later runs memory-map that file and never touch
JPEG decoding again; the page cache keeps the hot part in RAM.

The file name is a hash of the caller's ``key`` (which must describe the transform, e.g. the
preprocess dict) and of every file's resolved path, size and mtime, so a changed file list, a
touched file or a changed transform gives a new cache file instead of stale pixels.

Concurrency (why it is safe):
- The array is written to a temp file in the cache dir (`fruitnet.files.atomic_path`) and
  renamed into place only when complete, so a killed build never leaves a file that is later
  trusted; the next builder removes the killed one's temp file.
- Builders serialise on an ``fcntl.flock`` lock file next to the cache. The kernel drops the
  lock when its holder dies, so there is no stale lock to clean up. Whoever gets the lock
  re-checks whether the cache appeared meanwhile, so two DataLoader workers or two DDP ranks
  racing on the same split decode it once; the others wait and then map the finished file.
- Recommended use is still to call ``build()`` in the main process (the datamodule's
  ``setup()``) before workers start: a lazy build inside a worker works, but the other workers
  sit idle behind the lock while one worker decodes. Without ``fcntl`` (Windows) there is no
  lock; concurrent builders then both decode, and the last ``os.replace`` wins, which is
  wasteful but still correct.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from fruitnet.files import atomic_path, write_json
from fruitnet.settings import CACHE_ENV

log = logging.getLogger(__name__)

__all__ = ["DecodedImageCache", "cache_digest", "default_cache_dir"]

# Bump when the on-disk layout changes, so old files are never misread.
_FORMAT_VERSION = "1"


def default_cache_dir() -> Path:
    """``$FRUITNET_CACHE`` if set, else ``~/.cache/fruitnet/decoded``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fruitnet" / "decoded"


def cache_digest(paths: Sequence[Path], key: str) -> str:
    """Hash of (format version, key, each file's resolved path, size, mtime) in list order.

    Order matters because item ``i`` of the cache is ``paths[i]``.
    """
    h = hashlib.sha256()
    h.update(f"fruitnet-decoded-cache:{_FORMAT_VERSION}\0{key}\0{len(paths)}\0".encode())
    for p in paths:
        rp = Path(p).resolve()
        st = rp.stat()
        h.update(f"{rp}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:32]


class DecodedImageCache:
    """``cache[i]`` is ``decode(paths[i])`` (uint8 ``3 x S x S``), read from a memory-mapped .npy.

    Args:
        paths: image files; item ``i`` is ``paths[i]``.
        decode: file -> uint8 ``3 x S x S`` tensor, the same for every file (fixed ``S``).
            Must be deterministic, and picklable if DataLoader workers use spawn.
        cache_dir: where the ``.npy``, its JSON sidecar and the lock file live
            (default: :func:`default_cache_dir`).
        key: describes ``decode`` (e.g. ``json.dumps(preprocess, sort_keys=True)``); a
            different key gives a different cache file.
        num_threads: decoding threads for the build (PIL and torch release the GIL);
            default ``min(8, os.cpu_count())``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        decode: Callable[[Path], torch.Tensor],
        *,
        cache_dir: Path | str | None = None,
        key: str,
        num_threads: int | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.decode = decode
        self.key = key
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.num_threads = num_threads or min(8, os.cpu_count() or 1)
        # Hashing stats every file once here (cheap next to decoding), so a file changed after
        # this point is not noticed by this instance; a new instance notices.
        self.digest = cache_digest(self.paths, key)
        self.path = self.cache_dir / f"{self.digest}.npy"
        self.meta_path = self.cache_dir / f"{self.digest}.json"
        self.lock_path = self.cache_dir / f"{self.digest}.lock"
        self._mm: np.ndarray | None = None
        self._mm_pid: int | None = None

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        # A copy: a view into the read-only map would make torch warn about non-writable memory
        # and pin pages across workers; one 150 KB memcpy is noise next to the batch collate.
        return torch.from_numpy(np.array(self._array()[i]))

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        """Several items as one ``len(indices) x 3 x S x S`` uint8 tensor (one fancy-index copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self._array()[idx]))

    def as_tensor(self) -> torch.Tensor:
        """The whole set as one in-RAM ``N x 3 x S x S`` uint8 tensor (e.g. to keep it on a GPU)."""
        if len(self) == 0:
            return torch.empty((0, 3, 0, 0), dtype=torch.uint8)
        return torch.from_numpy(np.array(self._array()))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array().shape)

    def is_built(self) -> bool:
        """True when a complete cache file for these paths and key is on disk."""
        return len(self) == 0 or self._open_existing() is not None

    def build(self) -> Path:
        """Decode everything into the cache file unless it is already there; return its path.

        Safe to call from several processes at once (see the module docstring).
        """
        self._array()
        return self.path

    # ------------------------------------------------------------------ pickling (workers)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # A memmap pickles as a full in-memory copy; let each process map the file itself.
        state["_mm"] = None
        state["_mm_pid"] = None
        return state

    # ------------------------------------------------------------------ internals

    def _array(self) -> np.ndarray:
        if len(self) == 0:
            raise IndexError("empty cache: no paths were given")
        if self._mm is None or self._mm_pid != os.getpid():
            mm = self._open_existing()
            if mm is None:
                mm = self._build_locked()
            self._mm, self._mm_pid = mm, os.getpid()
        return self._mm

    def _open_existing(self) -> np.ndarray | None:
        """Map the cache file if it exists and looks complete; None otherwise."""
        if not self.path.is_file():
            return None
        try:
            mm = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as e:
            # Only a crash of the filesystem itself can produce this (builds use os.replace),
            # but a corrupt file must never be served: rebuild it.
            log.warning("decoded-image cache %s is unreadable (%s); rebuilding", self.path, e)
            return None
        if mm.dtype != np.uint8 or mm.ndim != 4 or mm.shape[0] != len(self) or mm.shape[1] != 3:
            log.warning(
                "decoded-image cache %s has shape %s dtype %s, expected %d x 3 x S x S uint8; "
                "rebuilding",
                self.path,
                mm.shape,
                mm.dtype,
                len(self),
            )
            return None
        return mm

    def _build_locked(self) -> np.ndarray:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            # Someone else may have finished the build while we waited for the lock.
            mm = self._open_existing()
            if mm is not None:
                log.info("decoded-image cache %s was built by another process", self.path.name)
                return mm
            self._remove_stale_temps()
            self._build()
            mm = self._open_existing()
            if mm is None:  # pragma: no cover - would mean os.replace lied
                raise RuntimeError(f"decoded-image cache {self.path} missing right after build")
            return mm

    @contextlib.contextmanager
    def _lock(self):
        if fcntl is None:  # pragma: no cover - Windows: see module docstring
            yield
            return
        with open(self.lock_path, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info(
                    "waiting for another process that is building decoded-image cache %s",
                    self.path.name,
                )
                t0 = time.monotonic()
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                log.info("waited %.1f s for the decoded-image cache lock", time.monotonic() - t0)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _remove_stale_temps(self) -> None:
        # We hold this digest's lock, so any temp file for it is left over from a killed build.
        # `atomic_path` names it ".<name>.<pid>.tmp"; the glob also takes older "<name>.tmp-*".
        for p in self.cache_dir.glob(f".{self.path.name}.*"):
            log.info("removing leftover temp file %s from an interrupted build", p.name)
            with contextlib.suppress(OSError):
                p.unlink()

    def _decode_one(self, i: int, expected: tuple[int, ...] | None = None) -> np.ndarray:
        path = self.paths[i]
        t = self.decode(path)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 3:
            got = f"{type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}"
            raise ValueError(f"decode({path}) must return a uint8 3 x S x S tensor, got {got}")
        if t.shape[0] != 3 or t.shape[1] != t.shape[2]:
            raise ValueError(f"decode({path}) returned shape {tuple(t.shape)}, expected 3 x S x S")
        if expected is not None and tuple(t.shape) != expected:
            raise ValueError(
                f"decode({path}) returned shape {tuple(t.shape)} but {self.paths[0]} gave "
                f"{expected}: every image must decode to the same size"
            )
        return t.detach().cpu().contiguous().numpy()

    def _build(self) -> None:
        n = len(self)
        t0 = time.monotonic()
        # The first image fixes S; decoding it twice would be harmless but is avoidable.
        first = self._decode_one(0)
        shape = (n, *first.shape)
        nbytes = int(np.prod(shape))
        free = shutil.disk_usage(self.cache_dir).free
        if nbytes > free:
            raise OSError(
                f"decoded-image cache needs {nbytes / 2**30:.2f} GiB in {self.cache_dir} but only "
                f"{free / 2**30:.2f} GiB are free; set {CACHE_ENV} to a larger disk or turn "
                "the cache off (data.cache=false)"
            )
        log.info(
            "building decoded-image cache %s: %d images -> %s uint8 (%.1f MiB), %d threads",
            self.path,
            n,
            "x".join(map(str, shape)),
            nbytes / 2**20,
            self.num_threads,
        )
        with atomic_path(self.path) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            # Reserve the blocks now: writing into a sparse map on a disk that fills up
            # kills the process with SIGBUS instead of raising.
            if hasattr(os, "posix_fallocate"):
                with open(tmp, "r+b") as fh:
                    try:
                        os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
                    except OSError as e:
                        if e.errno == errno.ENOSPC:
                            raise
                        # EOPNOTSUPP/EINVAL: the filesystem cannot preallocate; carry on.
            mm[0] = first
            self._fill(mm, first.shape, t0)
            mm.flush()
            del mm
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        elapsed = time.monotonic() - t0
        self._write_sidecar(shape, elapsed)
        log.info(
            "decoded-image cache built: %d images in %.1f s (%.0f images/s) -> %s",
            n,
            elapsed,
            n / max(elapsed, 1e-9),
            self.path,
        )

    def _fill(self, mm: np.ndarray, item_shape: tuple[int, ...], t0: float) -> None:
        n = len(self)
        if n == 1:
            return
        done = 1
        next_report = t0 + 5.0
        chunk = 32
        starts = range(1, n, chunk)

        def work(start: int) -> int:
            stop = min(start + chunk, n)
            for i in range(start, stop):
                mm[i] = self._decode_one(i, item_shape)
            return stop - start

        # Chunks keep the executor's per-task overhead small; results arrive in order, so the
        # progress log is cheap and a failing file raises here with its path in the message.
        ex = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="decode")
        try:
            for k in ex.map(work, starts):
                done += k
                now = time.monotonic()
                if now >= next_report:
                    rate = done / max(now - t0, 1e-9)
                    log.info(
                        "decoded-image cache: %d/%d images (%.0f%%), %.0f images/s, ~%.0f s left",
                        done,
                        n,
                        100 * done / n,
                        rate,
                        (n - done) / max(rate, 1e-9),
                    )
                    next_report = now + 5.0
        except BaseException:
            # Without cancelling, a bad file at the start would still decode the whole queue.
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)

    def _write_sidecar(self, shape: tuple[int, ...], elapsed: float) -> None:
        # For humans browsing the cache dir; never read back to decide validity.
        try:
            common = os.path.commonpath([os.path.abspath(p) for p in self.paths])
        except ValueError:  # paths on different Windows drives
            common = ""
        meta = {
            "format_version": _FORMAT_VERSION,
            "digest": self.digest,
            "key": self.key,
            "shape": list(shape),
            "dtype": "uint8",
            "file_count": len(self.paths),
            "files_under": common,
            "first_file": str(self.paths[0]),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(elapsed, 3),
        }
        try:
            write_json(self.meta_path, meta)
        except OSError as e:
            log.warning("could not write cache sidecar %s: %s", self.meta_path, e)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, key={self.key!r}, path={str(self.path)!r}, "
            f"built={self.is_built()})"
        )
