"""Prometheus metrics shared by several processes, and the Faust instrumentation.

Catalogue of every metric, the alerts and the dashboard: docs/observability.md.

* `practice_label(practice_id)`: the value of a `practice` label. Off by default
  (`RINGBACK_METRICS_PRACTICE_LABELS=off`): the label is then empty, which Prometheus
  stores as no label at all, so a metric costs the same whatever the number of
  practices. `on`: one value per practice id, at most `RINGBACK_METRICS_PRACTICE_LABELS_MAX`
  (50) per process, later ones `other`; or a comma-separated allow-list of practice ids
  (the others `other`). Never a phone number: an id holding 7 digits in a row is `other`.
  The `ringback` command sets the process's choice at start (`set_practice_labels`).
* `DEAD_LETTERS` (`ringback_dead_letters_total{source}`): every record any process
  writes to the dead-letter topic, labelled with the record's `source` field (gateway:
  the endpoint; `streams.<input>`; `sinks.<kind>` or `<namespace>.<topic>`; CDR poller:
  `cdr`; EHR sync/import: `fhir:<type>` / `fhir-ndjson:<type|ndjson>`, else `ehr.other`).
  Counted once the broker acknowledged the record.
* `instrument_faust_app(app, prefix, settings)`: Faust's own Prometheus monitor (its `/metrics`
  page serves the default registry: Faust's metrics and ours), consumer lag per
  topic/partition and table sizes, computed when scraped.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily

from ringback.config.settings import Settings

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ practice labels
OTHER = "other"
_PHONE_LIKE = re.compile(r"\d{7}")


class PracticeLabels:
    """Decides the `practice` label value of a practice id (bounded, configurable)."""

    def __init__(self, mode: str = "off", max_values: int = 50) -> None:
        mode = (mode or "off").strip()
        self.enabled = mode.lower() not in ("off", "0", "false", "no", "")
        self.allow: frozenset[str] | None = None
        if self.enabled and mode.lower() not in ("on", "1", "true", "yes"):
            self.allow = frozenset(p.strip() for p in mode.split(",") if p.strip())
        self.max_values = max_values
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PracticeLabels:
        return cls(settings.ringback_metrics_practice_labels, settings.ringback_metrics_practice_labels_max)

    def __call__(self, practice_id: str | None) -> str:
        if not self.enabled:
            return ""
        if not practice_id or _PHONE_LIKE.search(practice_id):
            return OTHER
        if self.allow is not None:
            return practice_id if practice_id in self.allow else OTHER
        if practice_id in self._seen:
            return practice_id
        with self._lock:
            if len(self._seen) < self.max_values:
                self._seen.add(practice_id)
                return practice_id
        if not self._warned:
            self._warned = True
            log.warning(
                "more than %d practices seen: further practices are labelled %r in metrics "
                "(RINGBACK_METRICS_PRACTICE_LABELS_MAX)",
                self.max_values,
                OTHER,
            )
        return OTHER


_practice_labels = PracticeLabels()  # off until the process says otherwise


def practice_label(practice_id: str | None) -> str:
    """The `practice` label value for a practice id, as this process labels practices."""
    return _practice_labels(practice_id)


def set_practice_labels(labels: PracticeLabels) -> None:
    """How this process labels practices from now on (the `ringback` command, at start)."""
    global _practice_labels
    _practice_labels = labels


_CHILDREN: dict = {}


def child(metric, *values: str):
    """`metric.labels(*values)`, cached per label tuple: prometheus_client's `labels()`
    validates and locks on every call (several % of a worker's CPU, a few calls per record).
    For label values that are few and fixed (kinds, results, inputs, bounded practice labels)."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


# ------------------------------------------------------------------ shared metrics
DEAD_LETTERS = Counter(
    "ringback_dead_letters_total", "Records written to the dead-letter topic, by the record's source", ["source"]
)


def declare_dead_letter_sources(sources: Iterable[str]) -> None:
    """Each process's dead-letter series at 0 from its start: Prometheus' increase() cannot
    see the first value of a series, so the DeadLetters alert would miss a first dead letter
    that creates its series."""
    for source in sources:
        DEAD_LETTERS.labels(source)


# First response (missed call reported at the gateway -> first patient SMS request sent):
# fine below 1 s (the target of docs/benchmarks.md: p99 < 1 s with no hold), then the deliberate hold
# (45 s by default), retries, and the business windows (15 min, 30 min, 2 h, 4 h).
FIRST_RESPONSE_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    2,
    5,
    10,
    30,
    45,
    50,
    60,
    120,
    300,
    900,
    1800,
    3600,
    7200,
    14400,
)


# ------------------------------------------------------------------ Faust apps
class _FaustCollector:
    """Consumer lag and table sizes of the Faust apps of this process, read at scrape time
    (so a revoked partition disappears with its assignment, no stale series)."""

    def __init__(self) -> None:
        self.apps: list[tuple[Any, dict]] = []  # (app, {tp: highwater})

    def add(self, app: Any) -> dict:
        highwaters: dict = {}
        self.apps.append((app, highwaters))
        return highwaters

    def describe(self) -> Iterable:
        return []  # collected lazily; nothing to check at registration

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "ringback_consumer_lag_messages",
            "Messages in an assigned input partition not yet committed by this "
            "worker's consumer group (end offset - committed offset)",
            labels=["consumer_group", "topic", "partition"],
        )
        sizes = GaugeMetricFamily(
            "ringback_table_keys",
            "Keys in a Faust table for the partitions this worker owns (RocksDB: its estimate)",
            labels=["table"],
        )
        for app, highwaters in self.apps:
            try:  # a scrape must never fail because of these two
                for (topic, partition), behind in sorted(consumer_lag(app, highwaters).items()):
                    lag.add_metric([app.conf.id, topic, str(partition)], behind)
                for name, count in table_sizes(app).items():
                    sizes.add_metric([name], count)
            except Exception:
                log.debug("consumer lag / table sizes not available", exc_info=True)
        yield lag
        yield sizes


_collector: _FaustCollector | None = None
_lean_monitor: type | None = None


def _lean_monitor_class(base: type) -> type:
    """Faust's PrometheusMonitor with the same series and values, cheaper per event: it
    calls `labels()` several times per record (prometheus_client validates and locks in
    each) and normalises the stream's label with regexes per event. Here the children are
    cached (`child`) and the stream label is computed once per stream."""
    global _lean_monitor
    if _lean_monitor is not None:
        return _lean_monitor
    from faust.sensors.monitor import Monitor

    class LeanPrometheusMonitor(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._stream_children: dict[Any, Any] = {}

        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            Monitor.on_message_in(self, tp, offset, message)
            m = self._metrics
            m.messages_received.inc()
            m.active_messages.inc()
            child(m.messages_received_per_topics, tp.topic).inc()
            child(m.messages_received_per_topics_partition, tp.topic, str(tp.partition)).set(offset)

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict | None:
            state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
            m = self._metrics
            m.total_events.inc()
            m.total_active_events.inc()
            per_stream = self._stream_children.get(stream)
            if per_stream is None:
                label = f"stream.{self._stream_label(stream)}.events"
                per_stream = self._stream_children[stream] = m.total_events_per_stream.labels(stream=label)
            per_stream.inc()
            return state

        def on_table_get(self, table: Any, key: Any) -> None:
            Monitor.on_table_get(self, table, key)
            child(self._metrics.table_operations, f"table.{table.name}", self.KEYS_RETRIEVED).inc()

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            Monitor.on_table_set(self, table, key, value)
            child(self._metrics.table_operations, f"table.{table.name}", self.KEYS_UPDATED).inc()

        def on_table_del(self, table: Any, key: Any) -> None:
            Monitor.on_table_del(self, table, key)
            child(self._metrics.table_operations, f"table.{table.name}", self.KEYS_DELETED).inc()

        def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
            child(self._metrics.topic_messages_sent, f"topic.{topic}").inc()
            return Monitor.on_send_initiated(self, producer, topic, message, keysize, valsize)

    _lean_monitor = LeanPrometheusMonitor
    return _lean_monitor


_faust_metrics: dict[str, Any] = {}


def consumer_lag(app: Any, highwaters: dict) -> dict[tuple[str, int], int]:
    """{(topic, partition): end offset - committed offset} for the assigned partitions
    the consumer group has committed (table changelogs are never committed: left out)."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return {}
    try:
        assigned = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started, rebalancing
        return {}
    committed = getattr(consumer, "_committed_offset", {}) or {}
    out = {}
    for tp in assigned:
        done, end = committed.get(tp), highwaters.get(tp)
        if done is None or end is None:
            continue
        out[(tp.topic, tp.partition)] = max(0, end - done)
    return out


def table_sizes(app: Any) -> dict[str, int]:
    sizes = {}
    for name, table in list(getattr(app, "tables", {}).items()):
        store = getattr(table, "_data", None)  # not `.data`: that would create the store
        if store is None:
            continue
        count = None
        data = getattr(store, "data", None)
        if isinstance(data, dict):  # memory://
            count = len(data)
        elif hasattr(store, "_dbs_for_actives"):  # rocksdb://: never iterate a million keys
            count = 0
            try:
                for db in store._dbs_for_actives():
                    if hasattr(db, "property_int_value"):  # rocksdict
                        count += db.property_int_value("rocksdb.estimate-num-keys") or 0
                    else:  # python-rocksdb
                        count += int(db.get_property(b"rocksdb.estimate-num-keys") or 0)
            except Exception:  # noqa: BLE001 - a DB closing under us
                count = None
        if count is not None:
            sizes[name] = count
    return sizes


def instrument_faust_app(app: Any, name_prefix: str, settings: Settings) -> None:
    """Wire Faust's Prometheus monitor (served at /metrics by the app's web server, with
    everything else in the default registry), consumer lag and table sizes into `app`.

    `RINGBACK_FAUST_PROMETHEUS=0` leaves Faust's own monitor out (the benchmark can
    compare); our metrics and /metrics stay. Several apps of one prefix in a process
    (tests build a topology more than once) share one set of Faust metrics."""
    global _collector
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if settings.ringback_faust_prometheus:
        # What faust.sensors.prometheus.setup_prometheus_sensors does, but with the metrics
        # created once per prefix: a second registration of a name raises.
        from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

        faust_metrics = _faust_metrics.get(name_prefix)
        if faust_metrics is None:
            faust_metrics = _faust_metrics[name_prefix] = FaustMetrics.create(REGISTRY, name_prefix)
        app.monitor = _lean_monitor_class(PrometheusMonitor)(metrics=faust_metrics)

    @app.page("/metrics")
    async def _metrics(web, request):
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    if _collector is None:
        _collector = _FaustCollector()
        REGISTRY.register(_collector)
    highwaters = _collector.add(app)
    interval = settings.ringback_lag_interval_s

    @app.timer(interval=interval, name=f"{name_prefix}.refresh_highwaters")
    async def _refresh_highwaters() -> None:
        """End offsets of the assigned partitions (one ListOffsets request), for the lag."""
        consumer = getattr(app, "_consumer", None)
        if consumer is None:
            return
        try:
            committed = getattr(consumer, "_committed_offset", {}) or {}
            tps = [tp for tp in consumer.assignment() if committed.get(tp) is not None]
            fresh = await consumer.highwaters(*tps) if tps else {}
        except Exception as exc:  # noqa: BLE001 - rebalancing, broker away: next time
            log.debug("could not read end offsets for the lag: %s", exc)
            return
        highwaters.clear()
        highwaters.update(fresh)
