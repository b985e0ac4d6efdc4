"""Rules that more than one module reads, each defined once: the environment switches, which file
names are images, which folder names are never data, the allocator modes. Imports nothing heavy,
so a command can check its config before torch and Lightning load."""

from __future__ import annotations

import os
from pathlib import Path

# FRUITNET_OFFLINE=1|true|yes|on: no dataset or weights download is tried; each says what to fetch
# by hand instead. Read by both downloaders through `is_offline`.
OFFLINE_ENV = "FRUITNET_OFFLINE"
# Where logs/ and data/ go when the command runs elsewhere (conf/paths/default.yaml reads it too).
ROOT_ENV = "FRUITNET_ROOT"
# The decoded-image cache folder (fruitnet.data.cache), ~/.cache/fruitnet/decoded by default.
CACHE_ENV = "FRUITNET_CACHE"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

# torchvision's ImageFolder list (tests/test_settings.py checks they agree), so a folder fruitnet
# scans holds the images ImageFolder would load. Written out: this module imports nothing heavy.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# `malloc=`: reuse = keep freed memory for reuse, system = glibc's defaults, auto = reuse on a CPU
# run (fruitnet.runtime.configure_malloc)
MALLOC_MODES = ("auto", "reuse", "system")

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
