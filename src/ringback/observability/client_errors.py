"""Kafka client connection errors, quiet: one WARNING per broker per interval, one ERROR per long outage.

While a broker is away, aiokafka (under Faust) logs "Unable connect to node ..." and
"Unable to update metadata ..." at ERROR for every retry: measured on our broker, a stream
worker wrote about 1,900 such lines a second, which drowns every other line and breaks
the level policy (docs/logging.md: ERROR is lost work; a dependency briefly away is a
WARNING). `QuietClientErrors` is a filter on the log handler (observability/logs.py):

* a connection-class line (see `CONNECTION_ERROR`) from a Kafka client library (the
  loggers in `CLIENT_LOGGERS`: aiokafka, kafka, faust and librdkafka through
  confluent-kafka's `logger` option) at WARNING or above is about a broker: the node id
  or the address in the line (an address seen with a node id counts as that node);
* the first such line of an outage is written at WARNING; then at most one line per
  broker per `interval_s`, at WARNING, saying how many were suppressed since the last
  line and how long the broker has been unreachable (extras `kafka_broker`,
  `suppressed`, `outage_s`);
* once the outage has lasted `error_after_s`, one line at ERROR; an outage ends when no
  such line came for one interval;
* every other line passes unchanged (a client's other errors are not connection noise).

Time comes from `clock` (seconds, monotonic), so tests drive it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# First dotted part of the logger names of the Kafka client libraries; "librdkafka" is the
# logger confluent-kafka clients are given (`logs.LIBRDKAFKA_LOGGER`).
CLIENT_LOGGERS = frozenset({"aiokafka", "kafka", "faust", "librdkafka"})

CONNECTION_ERROR = re.compile(
    r"unable connect|unable to (?:update|request) metadata|connect call failed|connection (?:refused|reset|closed)"
    r"|connect to ipv|kafkaconnectionerror|nodenotready|not ready|coordinator (?:dead|not available)"
    r"|marking the coordinator dead|heartbeat (?:failed|session expired|send request failed)"
    r"|failed fetch messages|requesttimedout|kafkatimeouterror|notleaderforpartition|leadernotavailable"
    r"|disconnected|brokers? (?:are|is) down|broker transport failure|all broker connections are down",
    re.IGNORECASE,
)
_NODE = re.compile(r"node(?: with)? id (\d+)|\(node (\d+)\)|metadata from \[?(\d+)|fetch messages from (\d+)")
_ADDRESS = re.compile(r"\('([\w.\-]+)', (\d+)\)|\b(\d{1,3}(?:\.\d{1,3}){3}|[A-Za-z][\w.\-]*\.[A-Za-z]+):(\d{2,5})")
_RDKAFKA_NODE = re.compile(r":\d{2,5}/(\d+)\b")


@dataclass
class _Outage:
    started: float
    last_seen: float
    last_written: float
    suppressed: int = 0
    error_written: bool = False


class QuietClientErrors(logging.Filter):
    """Rate-limits Kafka clients' connection errors (module docstring)."""

    def __init__(
        self, interval_s: float = 10.0, error_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.error_after_s = error_after_s
        self.clock = clock
        self._outages: dict[str, _Outage] = {}
        self._node_of_address: dict[str, str] = {}
        self._lock = threading.Lock()  # librdkafka's lines come from client threads

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name.partition(".")[0] not in CLIENT_LOGGERS:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: let the formatter report it
            return True
        if not CONNECTION_ERROR.search(text):
            return True
        with self._lock:
            return self._rate_limit(record, text, self._broker(text))

    def _broker(self, text: str) -> str:
        found_node = _NODE.search(text) or _RDKAFKA_NODE.search(text)
        node = next((g for g in found_node.groups() if g), None) if found_node else None
        address = None
        found = _ADDRESS.search(text)
        if found:
            host, port = (found.group(1), found.group(2)) if found.group(1) else (found.group(3), found.group(4))
            address = f"{host}:{port}"
        if node is not None:
            if address is not None:
                self._node_of_address[address] = node
            return f"node {node}"
        if address is not None:
            known = self._node_of_address.get(address)
            return f"node {known}" if known is not None else address
        return "cluster"

    def _rate_limit(self, record: logging.LogRecord, text: str, broker: str) -> bool:
        now = self.clock()
        outage = self._outages.get(broker)
        if outage is None or now - outage.last_seen > self.interval_s:  # a new outage
            suppressed = outage.suppressed if outage is not None else 0
            outage = self._outages[broker] = _Outage(started=now, last_seen=now, last_written=now)
            self._rewrite(record, text, broker, logging.WARNING, outage, suppressed)
            return True
        outage.last_seen = now
        lasted = now - outage.started
        if not outage.error_written and lasted >= self.error_after_s:
            outage.error_written = True
            level = logging.ERROR
        elif now - outage.last_written >= self.interval_s:
            level = logging.WARNING
        else:
            outage.suppressed += 1
            return False
        self._rewrite(record, text, broker, level, outage, outage.suppressed)
        outage.last_written = now
        outage.suppressed = 0
        return True

    def _rewrite(
        self, record: logging.LogRecord, text: str, broker: str, level: int, outage: _Outage, suppressed: int
    ) -> None:
        lasted = self.clock() - outage.started
        if level >= logging.ERROR:
            note = f"Kafka broker {broker} unreachable for {lasted:.0f} s (over {self.error_after_s:g} s)"
        else:
            note = f"Kafka broker {broker} unreachable for {lasted:.0f} s"
        note += f"; {suppressed} similar lines suppressed since the last one" if suppressed else ""
        record.msg = f"{text} [{note}; at most one line per {self.interval_s:g} s]"
        record.args = None
        record.levelno = level
        record.levelname = logging.getLevelName(level)
        record.kafka_broker = broker
        record.suppressed = suppressed
        record.outage_s = round(lasted, 1)
