"""The Admin console's Voice audit-log export → call events (pure), and the import's records."""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

import pytest

from ringback.config.settings import Settings
from ringback.schemas import codec
from ringback.sources.gvoice import audit_log
from tests.sources.gvoice.mail import VENDOR
from tests.sources.recording_producer import RecordingProducer

CTX = audit_log.Practiced(
    "birch-dental", frozenset({"+14155550100"}), "+14155550100", "US", ZoneInfo("America/Los_Angeles")
)
HEADER = "Event,Event description,Date,Actor,Call source,Call destination,Duration,Group conversation,Cost\n"


def mapped(line: str) -> audit_log.Mapped:
    columns, data = audit_log.rows(HEADER + line)
    ((row, _raw),) = data
    return audit_log.map_row(row, columns, CTX, 1)


def test_the_sample_export_maps_calls_and_skips_or_dead_letters_the_rest():
    columns, data = audit_log.rows((VENDOR / "voice-audit-log.csv").read_text())
    got = [audit_log.map_row(row, columns, CTX, 1) for row, _ in data]
    assert [(m.kind, m.record.get("outcome"), m.record.get("direction"), m.reason) for m in got] == [
        ("event", "MISSED", "INBOUND", ""),
        ("event", "VOICEMAIL", "INBOUND", ""),
        ("event", "ANSWERED", "INBOUND", ""),
        ("skip", None, None, "text_without_body"),
        ("event", "ANSWERED", "OUTBOUND", ""),
        ("skip", None, None, "not_a_call"),
        ("dead", None, None, "Date is not a date"),
    ]
    outbound = got[4].record
    assert (outbound["caller"], outbound["called"]) == ("+14155550142", "+14155550100")  # caller: the patient
    for m in got:
        if m.kind == "event":
            assert m.key == f"birch-dental|{m.record['caller']}".encode()
            codec.encode("call_event", m.record)


@pytest.mark.parametrize(
    "line, outcome, occurred",
    [
        # A short "received" call is a hang-up on the greeting, not a conversation.
        ("Call received,,2026-03-03T14:00:00-08:00,a,+14155550123,+14155550100,0:00:03,,", "MISSED", 1772575200000),
        ("Call received,,2026-03-03 14:00:00,a,4155550123,4155550100,65,,", "ANSWERED", 1772575200000),
        ('Missed call,,"Mar 3, 2026, 2:00:00 PM PST",a,(415) 555-0123,(415) 555-0100,,,', "MISSED", 1772575200000),
    ],
)
def test_dates_durations_and_numbers_in_the_forms_exports_use(line, outcome, occurred):
    m = mapped(line)
    assert m.kind == "event", m.reason
    assert m.record["outcome"] == outcome
    assert m.record["occurred_at"] == occurred
    assert m.record["caller"] == "+14155550123"


def test_withheld_numbers_and_the_practice_calling_itself_are_skipped():
    assert mapped("Missed call,,2026-03-03T14:00:00Z,a,anonymous,+14155550100,,,").reason == "no_external_number"
    assert mapped("Missed call,,2026-03-03T14:00:00Z,a,+14155550100,+14155550100,,,").reason == "number_is_practice"
    assert mapped("Call placed,,2026-03-03T14:00:00Z,a,+14155550100,+14155550123,0:00:02,,").reason == (
        "outbound_not_answered"
    )


def test_a_bad_duration_is_a_dead_letter():
    assert mapped("Missed call,,2026-03-03T14:00:00Z,a,+14155550123,+14155550100,two minutes,,").kind == "dead"


def test_the_same_row_gives_the_same_event_id_and_another_row_another():
    line = "Missed call,,2026-03-03T14:00:00Z,a,+14155550123,+14155550100,,,"
    assert mapped(line).record["event_id"] == mapped(line).record["event_id"]
    assert mapped(line).record["event_id"] != mapped(line.replace("14:00", "14:01")).record["event_id"]


def test_a_file_without_the_columns_is_refused():
    with pytest.raises(audit_log.AuditFileError, match="'call source'"):
        audit_log.rows("Event,Date,Duration\nMissed call,2026-03-03T14:00:00Z,0\n")
    with pytest.raises(audit_log.AuditFileError, match="empty"):
        audit_log.rows("")


def test_publish_sends_events_and_dead_letters_with_the_raw_row_and_reports_counts():
    producer = RecordingProducer()
    env = Settings(ringback_namespace="unit", kafka_bootstrap_servers="127.0.0.1:1")
    text = (VENDOR / "voice-audit-log.csv").read_text()
    report = asyncio.run(audit_log.publish(producer, env, text, "voice.csv", CTX, 5))
    assert report == {
        "file": "voice.csv",
        "rows": 7,
        "event_answered": 2,
        "event_missed": 1,
        "event_voicemail": 1,
        "dead_letter": 1,
        "skipped_not_a_call": 1,
        "skipped_text_without_body": 1,
    }
    ((key, value, _),) = producer.records("dead-letters")
    dead = codec.decode("dead_letter", value)
    assert dead["source"] == "gvoice-audit" and dead["reason"].startswith("voice.csv line 8: Date")
    assert dead["raw"].startswith(b"Missed call,broken row") and dead["content_type"] == "text/csv"
    assert len(producer.event_ids()) == 4
