"""Polling with a deadline: wait until a predicate holds, never a fixed sleep.

Used by the tests (`tests.conftest.wait_for`, failing with AssertionError) and the
bench (`ringback.dev.bench.harness.wait_until`, failing with TimeoutError).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
    error: type[Exception] = AssertionError,
) -> object:
    """Poll until `predicate()` is truthy and return its value; an exception it raises
    counts as "not yet". At the deadline raise `error` naming `message` (and the last
    exception the predicate raised, if any)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise error(
        f"timed out after {timeout:.0f}s waiting for {message}" + (f" (last error: {last_exc!r})" if last_exc else "")
    )
