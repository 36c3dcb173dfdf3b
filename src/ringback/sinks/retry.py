"""How the sinks retry: exponential backoff with full jitter, Retry-After honoured,
a fixed budget of attempts, then a dead letter.

Every sink raises one of three errors for a failed attempt:
  * `Transient` - worth another try (HTTP 429/5xx, timeouts, connection errors);
    `retry_after` (seconds) says how long the other side asked us to wait.
  * `Permanent` - the other side refused for good (HTTP 4xx, SMTP 5xx, bad input):
    retrying would only repeat the refusal.
  * `OptedOut` - Twilio error 21610: the number unsubscribed (a consent fact).
The waiting itself is tenacity's (`wait_exponential_jitter`), with Retry-After in front.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tenacity import wait_exponential_jitter
from tenacity.wait import wait_base

from ringback.config.settings import Settings


class SinkError(Exception):
    """A failed attempt; the message carries no PHI (no numbers, no text)."""


class Transient(SinkError):
    def __init__(self, message: str, retry_after: float | None = None, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # True when the request may have been carried out (it left, no answer came back).
        self.ambiguous = ambiguous


class RateLimited(Transient):
    """HTTP 429: refused, nothing was created; the whole practice slows down (`PracticeThrottle`)."""


class Permanent(SinkError):
    pass


class OptedOut(SinkError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # API calls per action, including the first
    base_s: float = 1.0  # first backoff; doubles each attempt, plus jitter
    max_s: float = 60.0  # one backoff at most
    retry_after_cap_s: float = 120.0  # a Retry-After longer than this is cut to it
    jitter_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=settings.ringback_sink_retry_attempts,
            base_s=settings.ringback_sink_retry_base_s,
            max_s=settings.ringback_sink_retry_max_s,
            retry_after_cap_s=settings.ringback_sink_retry_after_cap_s,
            jitter_s=settings.ringback_sink_retry_jitter_s,
        )

    def wait(self) -> wait_base:
        return wait_retry_after(
            wait_exponential_jitter(multiplier=self.base_s, max=self.max_s, jitter=self.jitter_s),
            cap=self.retry_after_cap_s,
        )


class wait_retry_after(wait_base):  # noqa: N801 - tenacity's naming
    """Wait what the server asked for (Retry-After), else fall back to another wait."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return max(0.0, min(float(after), self.cap))
        return self.fallback(retry_state)


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Retry-After in seconds (Slack sends seconds; an HTTP date is taken as the default)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


class PracticeThrottle:
    """At most `limit` API calls in flight per practice; and a practice told to slow down
    (a `RateLimited` raised inside `slot`: its Retry-After, else 1 s) waits as a whole: none of its calls leaves
    before the pause is over. The action that got the 429 retries itself, in its lane, so
    one caller's order is kept."""

    def __init__(
        self,
        limit: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.sleep = sleep
        self.wall = wall
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}

    @asynccontextmanager
    async def slot(self, practice_id: str) -> AsyncIterator[None]:
        slots = self._slots.get(practice_id)
        if slots is None:
            slots = self._slots[practice_id] = asyncio.Semaphore(self.limit)
        async with slots:
            while (wait := (until := self._paused_until.get(practice_id, 0.0)) - self.wall()) > 0:
                await self.sleep(wait)
                if self._paused_until.get(practice_id, 0.0) == until:
                    break  # not extended meanwhile by another 429
            try:
                yield
            except RateLimited as exc:  # a send or a look-up: the whole practice waits
                self.pause(practice_id, exc.retry_after if exc.retry_after is not None else 1.0)
                raise

    def pause(self, practice_id: str, seconds: float) -> None:
        until = self.wall() + max(0.0, seconds)
        self._paused_until[practice_id] = max(self._paused_until.get(practice_id, 0.0), until)

    def paused_for(self, practice_id: str) -> float:
        return max(0.0, self._paused_until.get(practice_id, 0.0) - self.wall())
