"""Image-folder data: scanning, decoding, batch preprocessing and the Lightning datamodules.

The names below load on first use (PEP 562): `fruitnet.predict` and `fruitnet.export` import
`fruitnet.data.io` and `fruitnet.data.transforms`, and must not pay for the datamodules, which
load Lightning (5 s on a 2-core CPU). ``from fruitnet.data import X`` works as before.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module of this package that defines it
_EXPORTS = {
    "ImageFolderDataModule": "datamodule",
    "auto_num_workers": "host",
    "CorruptImageError": "io",
    "check_image": "io",
    "is_image_file": "io",
    "load_image": "io",
    "resize_crop": "io",
    "ImageListDataset": "loading",
    "ClassMismatchError": "scan",
    "DataConflictError": "scan",
    "DataRootError": "scan",
    "DataWarning": "scan",
    "ScanResult": "scan",
    "resolve_layout": "scan",
    "scan_dataset": "scan",
    "stratified_split": "scan",
    "auto_image_size": "stats",
    "compute_dataset_stats": "stats",
    "inverse_frequency_weights": "stats",
    "SyntheticDataModule": "synthetic",
    "generate_synthetic_fruits": "synthetic",
    "BatchTransform": "transforms",
    "image_spec": "transforms",
    "preprocess_spec": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
