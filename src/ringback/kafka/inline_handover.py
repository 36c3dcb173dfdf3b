"""Hand each fetched record to the agents inline, not through four asyncio tasks.

faust-streaming's fetch loop gives every record to the conductor (which puts it into the
stream buffers of the agents) with `Service.wait_first(callback(record),
suspend_flow.wait())`, so that a rebalance can interrupt a hand-over that waits for room in
a full buffer. That costs four tasks per record (the callback, the suspend flag, the
service's stopped and crashed flags), while the hand-over almost never waits: the record
goes into the buffer and the callback returns. `install` runs the callback's first step
inline; only a callback that has to wait goes on as a task under the original `wait_first`,
so a rebalance interrupts it exactly as before. With `broker_max_poll_records`
(kafka/faust_app.py) the buffers rarely fill, so nearly every record takes the inline path.
The stream worker uses it (throughput); the sinks do not (it raised their latency under
load). Measured in BENCHMARKS.md ("Figure (a): Faust's fetch loop made cheaper").
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine
from typing import Any


async def _go_on(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Drive a coroutine whose first step ran by hand and which now waits on `waiting_on`
    (what it yielded: an asyncio future, or None for a bare `sleep(0)`), as a task would."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False
                await asyncio.wait([waiting_on])
        except BaseException as exc:  # noqa: BLE001 - cancelled while it waits: the coroutine decides, as in a task
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting_on = coro.send(None)  # it reads the future's result (or exception) itself
        except StopIteration as stop:
            return stop.value


def install(consumer: Any) -> None:
    """Wrap `consumer.wait_first` (a Faust transport consumer) for the fetch loop's call
    `wait_first(callback(record), suspend_flow.wait())`; every other call is left alone."""
    if getattr(consumer, "_ringback_inline_handover", False):
        return
    inner = consumer.wait_first
    suspend = consumer.suspend_flow
    suspend_wait = type(suspend).wait.__code__

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        if (
            len(coros) == 2
            and isinstance(coros[0], types.CoroutineType)
            and getattr(coros[1], "cr_code", None) is suspend_wait
            and not suspend.is_set()
        ):
            handover, suspended = coros
            try:
                waiting_on = handover.send(None)
            except StopIteration:  # handed over (the fetch loop reads no result)
                suspended.close()
                return None
            except BaseException:
                suspended.close()
                raise
            return await inner(_go_on(handover, waiting_on), suspended, timeout=timeout)
        return await inner(*coros, timeout=timeout)

    consumer.wait_first = wait_first
    consumer._ringback_inline_handover = True
