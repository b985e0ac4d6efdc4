"""fruitnet.timing against a machine whose speed moves: a fake clock that runs slow in a spell,
so that what each way of timing reads is exact and the test cannot pass by luck."""

from __future__ import annotations

import math

import pytest

import fruitnet.timing as timing
from fruitnet.timing import interleaved_ms, median_ms


class SlowSpellClock:
    """``perf_counter`` in seconds of a machine that runs ``factor`` times slower while the
    clock is in ``[start, end)``; ``work(cost_ms)`` is a callable that costs that much at full
    speed."""

    def __init__(self, start: float, end: float, factor: float = 2.0) -> None:
        self.now, self.start, self.end, self.factor = 0.0, start / 1e3, end / 1e3, factor

    def perf_counter(self) -> float:
        return self.now

    def work(self, cost_ms: float):
        def run() -> None:
            slow = self.start <= self.now < self.end
            self.now += cost_ms / 1e3 * (self.factor if slow else 1.0)

        return run


@pytest.fixture
def clock(monkeypatch):
    def make(start: float, end: float) -> SlowSpellClock:
        fake = SlowSpellClock(start, end)
        monkeypatch.setattr(timing.time, "perf_counter", fake.perf_counter)
        return fake

    return make


KW = dict(warmup=1, repeats=3, rounds=3)


def test_back_to_back_rounds_read_a_spell_that_interleaved_rounds_see_past(clock):
    """A 50 ms spell outlasts one entry's three back-to-back rounds (2 ms x 4 calls x 3 x 2):
    each reads 2x. Interleaved over two entries, the spell covers two rounds of each at most."""
    fake = clock(0.0, 50.0)
    assert median_ms(fake.work(2.0), **KW) == pytest.approx(4.0)
    fake = clock(0.0, 50.0)
    assert interleaved_ms([fake.work(1.0), fake.work(2.0)], **KW) == pytest.approx([1.0, 2.0])


def test_a_yardstick_cancels_a_spell_that_lasts_the_whole_call(clock):
    """A machine slow for the whole call: the best of rounds reads every entry 2x. Slowed for
    good after the first yardstick reading, each entry keeps its ratio to the yardstick, times
    the yardstick's best (that first, fast) reading."""
    fake = clock(0.0, math.inf)
    assert interleaved_ms([fake.work(1.0), fake.work(2.0)], **KW) == pytest.approx([2.0, 4.0])
    fake = clock(6.0, math.inf)  # the first yardstick reading: 1.5 ms x 4 calls
    yard = fake.work(1.5)
    got = interleaved_ms([fake.work(1.0), fake.work(2.0)], yardstick=yard, **KW)
    # the first round's ratios straddle the change (one fast, one slow yardstick reading);
    # the median of three rounds is a slowed round's, which is exact
    assert got == pytest.approx([1.0, 2.0])


def test_a_later_call_is_put_on_an_earlier_calls_scale_through_the_yardstick(clock):
    """A net timed after the machine slowed down for good reads its time at the earlier speed
    when the yardstick's earlier time is given, and 2x without."""
    fake = clock(0.0, math.inf)
    yard = fake.work(1.5)
    assert interleaved_ms([fake.work(2.0)], yardstick=yard, yardstick_ms=1.5, **KW) == (
        pytest.approx([2.0])
    )
    assert interleaved_ms([fake.work(2.0)], yardstick=yard, **KW) == pytest.approx([4.0])
