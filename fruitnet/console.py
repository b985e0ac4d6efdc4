"""The third-party noise kept out of what a run prints (the progress bar and the model summary are
callbacks: `fruitnet.callbacks.progress`).

A run shows fruitnet's lines, Lightning's progress bar and summary, and warnings about the
user's own run only. The filters here are narrow: each names the exact message and the module
it comes from, so any other warning of the same libraries still shows. fruitnet's own warnings
(`fruitnet.data.DataWarning` ...) are log lines of the module that warns, like its other lines,
instead of Python's ``file.py:NNN: DataWarning:`` and the source line under it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

# Lightning 2.6 builds a torch LeafSpec on every batch; torch >= 2.10 deprecates that. Not the
# user's code nor fruitnet's, and nothing the user can act on (pyproject filters it for pytest).
_THIRD_PARTY_WARNINGS = [
    dict(
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    ),
    # A NaN loss reaches the running-mean metric before FiniteLossGuard stops the run, naming the
    # step and the last good checkpoint in fruitnet's words.
    dict(
        message=r"Encountered `nan` values in tensor",
        category=UserWarning,
        module=r"torchmetrics\.utilities\.prints",
    ),
]
# Info lines of Lightning that are adverts or restate fruitnet's own configuration.
_LIGHTNING_INFO_DROPPED = (
    "💡 Tip:",  # litlogger / litmodels adverts
    "Trainer already configured with model summary callbacks",  # fruitnet configures its own
)


class _DropLightningInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(_LIGHTNING_INFO_DROPPED)


_info_filter = _DropLightningInfo()


_PACKAGE_DIR = Path(__file__).resolve().parent
_shown_by_python: Any = None  # warnings.showwarning as it was before `_show_warning`


def _fruitnet_module(category: type[Warning], filename: str) -> str | None:
    """The fruitnet module a warning is about (the logger it goes to), None for a library's."""
    path = Path(filename).resolve()
    if path.is_relative_to(_PACKAGE_DIR):
        return ".".join(path.relative_to(_PACKAGE_DIR.parent).with_suffix("").parts)
    return "fruitnet" if category.__module__.split(".")[0] == "fruitnet" else None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    module = _fruitnet_module(category, filename)
    if module is None:
        _shown_by_python(message, category, filename, lineno, file, line)
        return
    logging.getLogger(module).warning("%s", message)


def quiet_third_party() -> None:
    """Filter the third-party warnings and info lines that are not about the user's run, and
    show fruitnet's own warnings as log lines (`_show_warning`).

    Called by `fruitnet.config.run_entry` (every entry point); idempotent.
    """
    global _shown_by_python
    for spec in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", **spec)
    if warnings.showwarning is not _show_warning:
        _shown_by_python = warnings.showwarning
        warnings.showwarning = _show_warning
    # Lightning's rank_zero_info logs through this logger (records are filtered where made).
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _info_filter not in rank_zero.filters:
        rank_zero.addFilter(_info_filter)
