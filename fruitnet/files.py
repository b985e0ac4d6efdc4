"""Writing files so that a reader never sees half of one: the one atomic-write helper."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds the temporary file is
    renamed onto ``path`` (atomic on one file system), when it raises the temporary file is removed
    and ``path`` keeps what it held. The name starts with a dot, so folder scans skip it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """JSON with tensors as lists and paths as strings, written atomically."""
    return write_text(path, json.dumps(data, indent=indent, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def file_mib(path: str | os.PathLike | None) -> float | None:
    """Size in MiB of an existing file, else None."""
    return Path(path).stat().st_size / 2**20 if path and Path(path).is_file() else None
