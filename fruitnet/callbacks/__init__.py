"""Every Lightning callback of fruitnet, one module per concern:

- `checkpoint`: `ResumableCheckpoint` (last.ckpt from the first step on), `InterruptCheckpoint`,
  `RNGStateCheckpoint`
- `progress`: `progress_bar` (rich bar or one line per epoch), `NetworkSummary`
- `measure`: `ModelSizeCallback`, `TrainThroughput`, `EpochClock`, `KeepTestOutputs`
- `guards`: `FiniteLossGuard`

Config files name them by their home module (``fruitnet.callbacks.checkpoint.ResumableCheckpoint``);
the names below keep ``fruitnet.callbacks.<Name>`` working too.
"""

from fruitnet.callbacks.checkpoint import (
    InterruptCheckpoint,
    ResumableCheckpoint,
    RNGStateCheckpoint,
)
from fruitnet.callbacks.guards import FiniteLossGuard, NonFiniteLossError
from fruitnet.callbacks.measure import (
    EpochClock,
    KeepTestOutputs,
    ModelSizeCallback,
    TrainThroughput,
)
from fruitnet.callbacks.progress import (
    CompactRichProgressBar,
    EpochLineProgress,
    NetworkSummary,
    progress_bar,
)

__all__ = [
    "CompactRichProgressBar",
    "EpochClock",
    "EpochLineProgress",
    "FiniteLossGuard",
    "InterruptCheckpoint",
    "KeepTestOutputs",
    "ModelSizeCallback",
    "NetworkSummary",
    "NonFiniteLossError",
    "RNGStateCheckpoint",
    "ResumableCheckpoint",
    "TrainThroughput",
    "progress_bar",
]
