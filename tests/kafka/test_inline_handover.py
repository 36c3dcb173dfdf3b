"""kafka/inline_handover.py on a real mode Service (the base of Faust's consumer):
the fetch loop's call shape `wait_first(callback(record), suspend_flow.wait())`."""

from __future__ import annotations

import asyncio

import pytest
from mode import Service
from mode.utils.locks import Event

from ringback.kafka import inline_handover


class Fetcher(Service):
    """What the wrapper needs of Faust's consumer: `wait_first` and `suspend_flow`."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()
        self.slow_calls = 0
        inner = self.wait_first

        async def counted(*coros, timeout=None):
            self.slow_calls += 1
            return await inner(*coros, timeout=timeout)

        self.wait_first = counted  # type: ignore[method-assign]
        inline_handover.install(self)


def run(coro):
    return asyncio.run(coro)


def test_a_handover_that_does_not_wait_runs_inline_without_tasks():
    async def main():
        fetcher = Fetcher()
        buffer: list[int] = []

        async def callback(record: int) -> None:
            buffer.append(record)

        tasks_before = len(asyncio.all_tasks())
        for record in range(3):
            await fetcher.wait_first(callback(record), fetcher.suspend_flow.wait())
            assert len(asyncio.all_tasks()) == tasks_before
        return buffer, fetcher.slow_calls

    assert run(main()) == ([0, 1, 2], 0)


def test_a_handover_that_waits_goes_on_as_a_task_and_finishes():
    async def main():
        fetcher = Fetcher()
        room = asyncio.get_running_loop().create_future()
        buffer: list[str] = []

        async def callback(record: str) -> str:
            buffer.append(f"start {record}")
            got = await room  # a full buffer: waits for room
            await asyncio.sleep(0)  # a bare yield on the way
            buffer.append(f"put {record} {got}")
            return got

        asyncio.get_running_loop().call_later(0.01, room.set_result, "room")
        result = await fetcher.wait_first(callback("r1"), fetcher.suspend_flow.wait())
        return buffer, fetcher.slow_calls, result.done and result.results

    buffer, slow_calls, results = run(main())
    assert buffer == ["start r1", "put r1 room"]
    assert slow_calls == 1
    assert results == ["room"]


def test_a_rebalance_interrupts_a_waiting_handover_which_sees_the_cancellation():
    async def main():
        fetcher = Fetcher()
        never = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def callback() -> None:
            try:
                await never
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, fetcher.suspend_flow.set)
        await fetcher.wait_first(callback(), fetcher.suspend_flow.wait())
        await asyncio.sleep(0.01)
        return seen

    assert run(main()) == ["cancelled"]


def test_an_error_in_the_handover_reaches_the_fetch_loop_either_way():
    async def main(wait_first: bool):
        fetcher = Fetcher()

        async def callback() -> None:
            if wait_first:
                await asyncio.sleep(0)
            raise ValueError("undecodable")

        await fetcher.wait_first(callback(), fetcher.suspend_flow.wait())

    for waits in (False, True):
        with pytest.raises(ValueError, match="undecodable"):
            run(main(waits))


def test_while_the_flow_is_suspended_and_for_other_calls_wait_first_is_faust_s_own():
    async def main():
        fetcher = Fetcher()
        handed: list[int] = []

        async def callback(record: int) -> None:
            handed.append(record)

        fetcher.suspend_flow.set()
        await fetcher.wait_first(callback(1), fetcher.suspend_flow.wait())
        fetcher.suspend_flow.clear()
        other = asyncio.Event()
        other.set()
        await fetcher.wait_first(callback(2), other.wait())  # not the suspend flag
        await fetcher.wait_first(callback(3))
        return fetcher.slow_calls

    assert run(main()) == 3


def test_install_is_idempotent():
    async def main():
        fetcher = Fetcher()
        wrapped = fetcher.wait_first
        inline_handover.install(fetcher)
        return fetcher.wait_first is wrapped

    assert run(main())
