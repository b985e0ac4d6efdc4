"""results.json: one file per run that the report, the notebook and the benchmarks read."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

import fruitnet


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def file_mib(path: str | os.PathLike | None) -> float | None:
    return Path(path).stat().st_size / 2**20 if path and Path(path).is_file() else None


def test_metrics(metrics: dict[str, Any], class_names: list[str], details: dict[str, Any]):
    """Flatten `test/<name>` metrics into `test_<name>` keys, plus per-class accuracy and the
    confusion matrix (rows = true class, columns = predicted, in class_names order)."""
    out: dict[str, Any] = {
        k.replace("/", "_"): float(v) for k, v in metrics.items() if k.startswith("test/")
    }
    if details:
        out["per_class_acc"] = dict(zip(class_names, details["per_class_acc"], strict=True))
        out["confusion_matrix"] = details["confusion_matrix"]
    return out


def environment() -> dict[str, Any]:
    return {
        "fruitnet_version": fruitnet.__version__,
        "torch_version": torch.__version__,
        "lightning_version": L.__version__,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }
