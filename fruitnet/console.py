"""The third-party noise kept out of what a run prints (the progress bar and the model summary are
callbacks: `fruitnet.callbacks.progress`).

A run shows fruitnet's lines, Lightning's progress bar and summary, and warnings about the
user's own run only. The filters here are narrow: each names the exact message and the module
it comes from, so any other warning of the same libraries still shows.
"""

from __future__ import annotations

import logging
import warnings

# Lightning 2.6 builds a torch LeafSpec on every batch; torch >= 2.10 deprecates that. Not the
# user's code nor fruitnet's, and nothing the user can act on (pyproject filters it for pytest).
_THIRD_PARTY_WARNINGS = [
    dict(
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
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


def quiet_third_party() -> None:
    """Filter the third-party warnings and info lines that are not about the user's run.

    Called by `fruitnet.config.run_entry` (every entry point); idempotent.
    """
    for spec in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", **spec)
    # Lightning's rank_zero_info logs through this logger (records are filtered where made).
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _info_filter not in rank_zero.filters:
        rank_zero.addFilter(_info_filter)
