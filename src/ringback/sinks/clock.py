"""The sinks' clock: the wall clock, or one a test sets from outside.

`RINGBACK_SINKS_CLOCK_FILE` names a file holding epoch seconds; the sinks read it
on every `now()`, so an integration test can put a running sink worker at 22:30
practice time and later at 08:00 without waiting a night. Never set in production.
"""

from __future__ import annotations

from pathlib import Path

from ringback.clock import Clock
from ringback.config.settings import Settings


class FileClock(Clock):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last = 0.0

    def now(self) -> float:
        try:
            self._last = float(self.path.read_text().strip())
        except (OSError, ValueError):
            pass  # mid-write or missing: keep the last value read
        return self._last


def sink_clock(settings: Settings) -> Clock:
    path = settings.ringback_sinks_clock_file
    return FileClock(path) if path else Clock()
