"""Rules that more than one module reads, each defined once: the environment switches, which file
names are images, and which folder names are never data."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

# FRUITNET_OFFLINE=1|true|yes|on: no dataset or weights download is tried; each says what to fetch
# by hand instead. Read by both downloaders through `is_offline`.
OFFLINE_ENV = "FRUITNET_OFFLINE"
# Where logs/ and data/ go when the command runs elsewhere (conf/paths/default.yaml reads it too).
ROOT_ENV = "FRUITNET_ROOT"
# The decoded-image cache folder (fruitnet.data.cache), ~/.cache/fruitnet/decoded by default.
CACHE_ENV = "FRUITNET_CACHE"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

# torchvision's ImageFolder list, so a folder fruitnet scans holds the images ImageFolder would load.
IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)

# Folders that archives and operating systems add beside the data; never classes, never splits.
# Compared in lower case. Hidden folders (a leading dot) are skipped as well, see `is_junk_dir`.
JUNK_DIR_NAMES = frozenset({"__macosx", "__pycache__", "$recycle.bin", "system volume information"})


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is 1, true, yes or on (any case)."""
    return os.environ.get(name, "").strip().lower() in _TRUE_WORDS


def is_offline() -> bool:
    return env_flag(OFFLINE_ENV)


def root_dir() -> Path:
    """``$FRUITNET_ROOT``, else the working directory: the parent of logs/ and data/."""
    return Path(os.environ.get(ROOT_ENV) or ".")


def has_image_extension(name: str | os.PathLike) -> bool:
    return os.fspath(name).lower().endswith(IMAGE_EXTENSIONS)


def is_junk_dir(name: str) -> bool:
    """A hidden folder or one of `JUNK_DIR_NAMES` (``__MACOSX`` from a Mac zip, ...)."""
    return name.startswith(".") or name.lower() in JUNK_DIR_NAMES
