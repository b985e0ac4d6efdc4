"""Where the Hydra configs are, and helpers to turn config nodes into objects."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"

# A source checkout (editable install, or `python -m` from the repo) uses conf/ directly, so edits
# show up at once; a wheel install ships the same files as the package `fruitnet.conf`.
CONFIG_PATH = (
    str(_SOURCE_CONF) if (_SOURCE_CONF / "train.yaml").is_file() else "pkg://fruitnet.conf"
)
CONFIG_MODULE = "fruitnet.conf"


def to_primitive(node: Any) -> Any:
    """DictConfig/ListConfig -> plain dict/list (resolved), so nothing OmegaConf-typed is pickled."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group; null entries are dropped."""
    objects: list[Any] = []
    if not group:
        return objects
    for name, node in group.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"config entry '{name}' needs a _target_ (got {node!r})")
        objects.append(hydra.utils.instantiate(node))
    return objects


def run_entry(run: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point. A failure logs one readable line first; Hydra then reports the job
    failure with its traceback (and a sweep goes on to the next job)."""
    try:
        return run(cfg)
    except Exception as err:
        log.error("fruitnet: %s", err)
        raise
