"""The Faust monitor the apps get (observability/metrics.py): Faust's PrometheusMonitor
made cheaper per event reports the same series with the same values."""

from __future__ import annotations

from types import SimpleNamespace

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry

from ringback.observability.metrics import _lean_monitor_class


class FakeTask:
    pass


class FakeStream:
    shortlabel = "Stream: ringback.worker.topology.process"

    def __init__(self) -> None:
        self.task_owner = FakeTask()


def samples(registry: CollectorRegistry) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def drive(monitor) -> None:
    stream, table = FakeStream(), SimpleNamespace(name="state")
    for offset in range(3):
        tp = TP("x.call-events", offset % 2)
        message = SimpleNamespace(time_in=None)
        monitor.on_message_in(tp, offset, message)
        state = monitor.on_stream_event_in(tp, offset, stream, None)
        monitor.on_table_get(table, "k")
        monitor.on_table_set(table, "k", b"v")
        monitor.on_table_del(table, "k")
        monitor.on_send_initiated(None, "x.actions", None, 1, 1)
        monitor.on_stream_event_out(tp, offset, stream, None, state)
        monitor.on_message_out(tp, offset, message)


def test_the_lean_monitor_reports_what_faust_prometheus_monitor_reports():
    faust_registry, lean_registry = CollectorRegistry(), CollectorRegistry()
    drive(PrometheusMonitor(metrics=FaustMetrics.create(faust_registry, "a")))
    drive(_lean_monitor_class(PrometheusMonitor)(metrics=FaustMetrics.create(lean_registry, "a")))
    expected, got = samples(faust_registry), samples(lean_registry)
    latency = {k for k in expected if k[0].endswith("_sum")}  # timings differ run to run; their counts do not
    assert {k: v for k, v in got.items() if k not in latency} == {k: v for k, v in expected.items() if k not in latency}
    assert got[("a_messages_received_per_topic_total", (("topic", "x.call-events"),))] == 3
    assert got[("a_messages_received_per_topics_partition", (("partition", "0"), ("topic", "x.call-events")))] == 2
