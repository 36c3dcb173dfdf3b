"""The one place that reads the wall clock. Rules get `now` as a value; agents and
connectors get it from a Clock, which tests replace with a ManualClock."""

from __future__ import annotations

import time


class Clock:
    def now(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return int(self.now() * 1000)


class ManualClock(Clock):
    def __init__(self, start: float = 1_767_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = when
