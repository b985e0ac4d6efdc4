"""Learning-rate schedules that torch does not have.

`TimeBudgetOneCycle` is torch's `OneCycleLR` (cosine warm-up to `max_lr`, cosine anneal) laid out
over a wall-clock budget instead of a step count. With `trainer.max_time` a step-sized cycle is a
guess: on a slower or busier machine the run stops mid-cycle at a high lr, on a faster one the
cycle ends early and the rest of the budget trains at the floor lr. Sized by time, the anneal
ends when the budget does, whatever the speed (`scheduler=onecycle_time`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["TimeBudgetOneCycle", "one_cycle_lr"]


def one_cycle_lr(
    fraction: float, max_lr: float, pct_start: float, div_factor: float, final_div_factor: float
) -> float:
    """OneCycleLR's cosine shape at `fraction` (0..1, clipped) of the cycle."""
    t = min(max(fraction, 0.0), 1.0)
    initial = max_lr / div_factor
    final = initial / final_div_factor
    if t < pct_start:
        return initial + (max_lr - initial) * (1 - math.cos(math.pi * t / pct_start)) / 2
    u = (t - pct_start) / (1 - pct_start) if pct_start < 1 else 1.0
    return final + (max_lr - final) * (1 + math.cos(math.pi * u)) / 2


class TimeBudgetOneCycle(LRScheduler):
    """One cycle over `budget_s` seconds of wall-clock time, counted from the first lr query.

    Step it every batch (`interval: step`). The elapsed time, not the clock reading, is saved in
    the state dict, so a resumed run goes on from where it was (as Lightning's Timer does).
    `clock` is for tests.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float,
        budget_s: float,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        last_epoch: int = -1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        if not 0 < pct_start <= 1:
            raise ValueError(f"pct_start must be in (0, 1], got {pct_start}")
        self.max_lr = float(max_lr)
        self.budget_s = float(budget_s)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self._clock = clock
        self._elapsed_before = 0.0
        self._started: float | None = None
        super().__init__(optimizer, last_epoch)

    def elapsed(self) -> float:
        now = self._clock()
        if self._started is None:
            self._started = now
        return self._elapsed_before + now - self._started

    def get_lr(self) -> list[float]:
        lr = one_cycle_lr(
            self.elapsed() / self.budget_s,
            self.max_lr,
            self.pct_start,
            self.div_factor,
            self.final_div_factor,
        )
        return [lr for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        # Plain numbers only (checkpoints load with weights_only=True): no clock, no clock reading
        skip = {"optimizer", "_clock", "_started", "_elapsed_before"}
        state = {k: v for k, v in self.__dict__.items() if k not in skip}
        state["elapsed_s"] = self.elapsed()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._elapsed_before = float(state.pop("elapsed_s", 0.0))
        self._started = None
        self.__dict__.update(state)
