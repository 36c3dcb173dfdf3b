"""The shared helpers of the duplicate clean-up: `kafka.topic_cache` (the reader that fills a
topic cache, again after an error) and `dev.waiting` (polling with a deadline), without a broker."""

from __future__ import annotations

import logging

import pytest

from ringback.dev.bench.harness import wait_until
from ringback.dev.waiting import wait_for
from ringback.kafka.topic_cache import TopicCacheReader


class FakeConsumer:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_reader_reads_again_from_the_start_after_an_error_and_closes_every_consumer(caplog):
    consumers: list[FakeConsumer] = []

    def read(consumer: FakeConsumer) -> None:
        consumers.append(consumer)
        if len(consumers) == 1:
            raise RuntimeError("leader not available")
        reader.ready.set()
        reader.stop.wait()

    reader = TopicCacheReader("thing", "the topic", read, thread_name="test-reader", retry_s=0.05)
    with caplog.at_level(logging.WARNING, logger="ringback.kafka.topic_cache"):
        reader.start(FakeConsumer)
        assert reader.wait_ready(5)
        reader.close()
    assert len(consumers) == 2 and all(c.closed for c in consumers)
    messages = [r.getMessage() for r in caplog.records]
    assert "thing stopped following the topic" in messages
    assert "thing: reading the topic again" in messages


def test_reader_stops_without_reading_again_once_closed():
    consumers: list[FakeConsumer] = []
    reader = TopicCacheReader("thing", "the topic", consumers.append, thread_name="test-reader", retry_s=30)
    reader.start(FakeConsumer)
    wait_for(lambda: consumers, 5, message="the first read")
    reader.close()  # during the 30 s pause: no second read
    assert len(consumers) == 1 and consumers[0].closed and not reader.ready.is_set()


def test_wait_for_fails_with_assertion_error_and_the_bench_with_timeout_error():
    with pytest.raises(AssertionError, match=r"waiting for x \(last error: ZeroDivisionError"):
        wait_for(lambda: 1 / 0, 0.2, 0.01, message="x")
    with pytest.raises(TimeoutError, match="waiting for y"):
        wait_until(lambda: False, 0.2, "y", interval=0.01)
    assert wait_for(lambda: 7, 1) == 7 and wait_until(lambda: "ok", 1, "z") == "ok"
