"""Avro schemas and codec (schemas/): pure unit tests, no Kafka, no registry."""

from __future__ import annotations

import copy
import io
import json
import os
import secrets
import shutil
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringback.schemas import codec, compat
from ringback.schemas.codec import (
    AvroCodec,
    SchemaDecodeError,
    SchemaRegistryError,
    SchemaValidationError,
    UnknownSchemaError,
)

SCHEMA_DIR = Path(codec.__file__).resolve().parent
T0 = 1_732_640_000_000  # 2024-11-26T16:53:20Z in epoch ms


def call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def message_sid() -> str:
    return "SM" + secrets.token_hex(16)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_registry(monkeypatch):
    """Single-object framing unless a test injects a registry."""
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    codec.set_registry()
    yield
    codec.set_registry()


def realistic_records() -> dict[str, list[dict]]:
    sid = call_sid()
    return {
        "call_event": [
            {
                "event_id": f"{sid}:status",
                "provider": "twilio",
                "event_type": "CALL",
                "outcome": "MISSED",
                "provider_status": "no-answer",
                "practice_id": "sunrise-family-dental",
                "caller": "+14155550123",
                "called": "+14155550100",
                "direction": "INBOUND",
                "provider_call_id": sid,
                "occurred_at": T0,
                "received_at": T0 + 412,
                "duration_s": 0,
            },
            {
                "event_id": f"{sid}:transcription",
                "provider": "twilio",
                "event_type": "TRANSCRIPTION",
                "outcome": None,
                "provider_status": "completed",
                "practice_id": "sunrise-family-dental",
                "caller": "+14155550123",
                "called": "+14155550100",
                "direction": "INBOUND",
                "provider_call_id": sid,
                "occurred_at": T0 + 45_000,
                "received_at": T0 + 61_250,
                "duration_s": 38,
                "recording_url": f"https://api.twilio.com/2010-04-01/Accounts/AC{secrets.token_hex(16)}/Recordings/RE{secrets.token_hex(16)}",
                "transcript": "Hi, this is Maria, I need to reschedule my cleaning on Thursday to a different time. Thanks.",
                "sms_body": None,
                "sms_id": None,
            },
            {
                "event_id": f"{message_sid()}:sms",
                "provider": "twilio",
                "event_type": "SMS",
                "provider_status": "received",
                "practice_id": "lakeside-pediatrics",
                "caller": "+442071838750",
                "called": "+13125550199",
                "direction": "INBOUND",
                "provider_call_id": message_sid(),
                "occurred_at": datetime(2024, 11, 26, 17, 5, 3, 250000, tzinfo=UTC),
                "received_at": datetime(2024, 11, 26, 12, 5, 3, 900000, tzinfo=timezone(timedelta(hours=-5))),
                "sms_body": "STOP ✋ please stop texting me",
                "sms_id": "SM" + secrets.token_hex(16),
            },
            {
                "event_id": "c0a8-7f1e-2024:call",
                "provider": "ringcentral",
                "event_type": "CALL",
                "outcome": "VOICEMAIL",
                "provider_status": "Voicemail",
                "practice_id": "lakeside-pediatrics",
                "caller": "+13125550123",
                "called": "+13125550199",
                "direction": "INBOUND",
                "provider_call_id": "c0a8-7f1e-2024",
                "occurred_at": T0,
                "received_at": T0 + 1_003,
                "duration_s": 27,
            },
        ],
        "action_command": [
            {
                "action_id": f"case-{sid}:first_sms",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "kind": "SEND_SMS",
                "step": "first_sms",
                "scenario": "NEW_PATIENT",
                "recipient": "+14155550123",
                "body": "Sunrise Family Dental: sorry we missed your call! Reply to book, or book here: https://book.example.com/sunrise. Reply STOP to opt out.",
                "reason": "new patient, first response",
                "priority": "NORMAL",
                "created_at": T0 + 45_100,
                "due_at": None,
                "missed_at": T0,
                "call_reported_at": T0 + 412,
                "params": {"booking_link": "https://book.example.com/sunrise", "template": "new_patient_first"},
            },
            {
                "action_id": f"case-{sid}:clinical_callback",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "kind": "CREATE_TASK",
                "step": "clinical_callback",
                "scenario": "URGENT_EXISTING",
                "recipient": "nurse",
                "reason": "callback-requested flag from the after-hours nurse line",
                "priority": "URGENT",
                "created_at": T0 + 500,
                "due_at": T0 + 30 * 60_000,
            },
        ],
        "patient": [
            {
                "practice_id": "sunrise-family-dental",
                "phone": "+14155550123",
                "patient_id": "Patient/8d2b6c1e-51f0-4c9a-9d3e-0a7f2b1c4e55",
                "display_name": "María José O'Neil",
                "deceased": False,
                "assigned_provider": "Practitioner/dr-lee",
                "updated_at": T0 - 86_400_000,
            },
            {
                "practice_id": "lakeside-pediatrics",
                "phone": "+13125550123",
                "patient_id": "1234567",
                "updated_at": T0,
            },
        ],
        "appointment": [
            {
                "practice_id": "sunrise-family-dental",
                "appointment_id": "Appointment/9a1",
                "patient_id": "Patient/8d2b6c1e-51f0-4c9a-9d3e-0a7f2b1c4e55",
                "phone": "+14155550123",
                "start": T0 + 2 * 86_400_000,
                "status": "booked",
                "updated_at": T0 - 3_600_000,
            },
            {
                "practice_id": "sunrise-family-dental",
                "appointment_id": "Appointment/9a2",
                "patient_id": "Patient/77",
                "phone": None,
                "start": datetime(2024, 12, 2, 15, 30, tzinfo=UTC),
                "status": "cancelled",
                "updated_at": T0,
            },
        ],
        "flag": [
            {
                "practice_id": "sunrise-family-dental",
                "flag_id": "Flag/cb-20241126-1",
                "patient_id": "Patient/8d2b6c1e-51f0-4c9a-9d3e-0a7f2b1c4e55",
                "phone": "+14155550123",
                "code": "callback-requested",
                "display": "Nurse line: call back re: post-op pain",
                "priority": "PH",
                "status": "active",
                "callback_requested": True,
                "updated_at": T0 - 600_000,
            },
            {
                "practice_id": "lakeside-pediatrics",
                "flag_id": "Flag/refill-77",
                "patient_id": "Patient/77",
                "code": "refill-request",
                "status": "inactive",
                "updated_at": T0,
            },
        ],
        "practice_config": [
            {
                "practice_id": "sunrise-family-dental",
                "name": "Sunrise Family Dental",
                "time_zone": "America/Los_Angeles",
                "phone_numbers": ["+14155550100", "+14155550101"],
                "sms_from": None,
                "messaging_service_sid": "MG" + secrets.token_hex(16),
                "booking_link": "https://book.example.com/sunrise",
                "reschedule_link": "https://book.example.com/sunrise/reschedule",
                "routing": {
                    "scheduling": "slack:sunrise-scheduling",
                    "nurse": "email:nurse@sunrise.example",
                    "manager": "email:ops@sunrise.example",
                },
                "windows": {"first_sms_hold": 45, "new_patient_followup": 7200, "urgent_escalation": 2700},
                "quiet_hours_start": "08:00",
                "quiet_hours_end": "21:00",
                "blocked_numbers": ["+18005550199"],
                "config_json": json.dumps({"id": "sunrise-family-dental", "fcc_healthcare_profile": True}),
                "updated_at": T0,
            },
            {
                "practice_id": "lakeside-pediatrics",
                "name": "Lakeside Pediatrics",
                "time_zone": "America/Chicago",
                "phone_numbers": ["+13125550199"],
                "sms_from": "+13125550199",
                "booking_link": "https://lakeside.example/book",
                "routing": {},
                "windows": {},
            },
        ],
        "task_update": [
            {
                "update_id": "upd-1",
                "task_id": f"case-{sid}:clinical_callback",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "action": "COMPLETE",
                "actor": "staff:jlee",
                "outcome": "reached",
                "new_role": None,
                "at": T0 + 20 * 60_000,
            },
            {
                "update_id": "upd-2",
                "task_id": f"case-{sid}:callback_task",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "action": "REASSIGN",
                "actor": "staff:mgarcia",
                "new_role": "nurse",
                "at": T0 + 60_000,
            },
        ],
        "outcome": [
            {
                "outcome_id": f"case-{sid}:CONVERTED",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "scenario": "NEW_PATIENT",
                "state": "CONVERTED",
                "final": True,
                "missed_at": T0,
                "first_response_at": T0 + 45_300,
                "response_latency_ms": 45_300,
                "within_window": True,
                "escalations": 0,
                "converted": True,
                "converted_at": T0 + 3_600_000,
                "conversion_channel": "booking",
                "channel": "sms",
                "reason": None,
                "at": T0 + 3_600_000,
            },
            {
                "outcome_id": f"case-{call_sid()}:OPEN",
                "case_id": f"case-{call_sid()}",
                "practice_id": "lakeside-pediatrics",
                "scenario": "GENERAL_INQUIRY",
                "state": "OPEN",
                "final": False,
                "missed_at": T0,
                "at": T0 + 10,
            },
        ],
        "dead_letter": [
            {
                "source": "/webhooks/twilio/voice/status",
                "reason": "missing CallSid",
                "raw": b"CallStatus=no-answer&From=%2B14155550123&To=%2B14155550100",
                "content_type": "application/x-www-form-urlencoded",
                "received_at": T0,
                "practice_id": "sunrise-family-dental",
            },
            {
                "source": "/webhooks/dialpad",
                "reason": "invalid JWT",
                "raw": bytes(range(256)),
                "received_at": T0,
            },
        ],
        "message_status": [
            {
                "message_sid": "SM" + "5" * 32,
                "status": "delivered",
                "practice_id": "sunrise-family-dental",
                "recipient": "+14155550123",
                "action_id": "sunrise-family-dental:0a1b2c3d4e5f60718293:first_sms",
                "received_at": T0,
            },
            {
                "message_sid": "SM" + "6" * 32,
                "status": "undelivered",
                "error_code": "21610",
                "practice_id": "sunrise-family-dental",
                "recipient": "+14155550124",
                "received_at": T0,
            },
        ],
    }


def to_millis(v):
    if isinstance(v, datetime):
        return int(round(v.timestamp() * 1000))
    return v


def expected_after_round_trip(name: str, record: dict) -> dict:
    """The record with defaults filled in and datetimes as epoch ms."""
    out = {}
    for f in codec.schema(name)["fields"]:
        out[f["name"]] = to_millis(record[f["name"]]) if f["name"] in record else f["default"]
    return out


RECORDS = realistic_records()
CASES = [(name, i) for name, recs in RECORDS.items() for i in range(len(recs))]


# --------------------------------------------------------------------------- schema files

EXPECTED_FIELDS = {
    "call_event": [
        "event_id",
        "provider",
        "event_type",
        "outcome",
        "provider_status",
        "practice_id",
        "caller",
        "called",
        "direction",
        "provider_call_id",
        "occurred_at",
        "received_at",
        "duration_s",
        "recording_url",
        "transcript",
        "sms_body",
        "sms_id",
    ],
    "action_command": [
        "action_id",
        "case_id",
        "practice_id",
        "kind",
        "step",
        "scenario",
        "recipient",
        "body",
        "reason",
        "priority",
        "created_at",
        "due_at",
        "missed_at",
        "call_reported_at",
        "params",
    ],
    "patient": ["practice_id", "phone", "patient_id", "display_name", "deceased", "assigned_provider", "updated_at"],
    "appointment": ["practice_id", "appointment_id", "patient_id", "phone", "start", "status", "updated_at"],
    "flag": [
        "practice_id",
        "flag_id",
        "patient_id",
        "phone",
        "code",
        "display",
        "priority",
        "status",
        "callback_requested",
        "updated_at",
    ],
    "practice_config": [
        "practice_id",
        "name",
        "time_zone",
        "phone_numbers",
        "sms_from",
        "messaging_service_sid",
        "booking_link",
        "reschedule_link",
        "routing",
        "windows",
        "quiet_hours_start",
        "quiet_hours_end",
        "blocked_numbers",
        "config_json",
    ],
    "task_update": ["update_id", "task_id", "case_id", "practice_id", "action", "actor", "outcome", "new_role", "at"],
    "outcome": [
        "outcome_id",
        "case_id",
        "practice_id",
        "scenario",
        "state",
        "final",
        "missed_at",
        "first_response_at",
        "response_latency_ms",
        "within_window",
        "escalations",
        "converted",
        "converted_at",
        "conversion_channel",
        "channel",
        "reason",
        "at",
    ],
    "dead_letter": ["source", "reason", "raw", "content_type", "received_at", "practice_id"],
    "message_status": ["message_sid", "status", "error_code", "practice_id", "recipient", "action_id", "received_at"],
}


def test_every_topic_has_a_schema():
    assert set(codec.SCHEMA_NAMES) == set(EXPECTED_FIELDS)
    assert set(RECORDS) == set(EXPECTED_FIELDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_FIELDS))
def test_schema_file_parses_alone_and_documents_every_field(name):
    raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    fastavro.parse_schema(raw)  # self-contained: no references to other files
    assert raw["type"] == "record" and raw["namespace"] == "dev.ringback" and raw["doc"]
    fields = {f["name"]: f for f in raw["fields"]}
    for fname in EXPECTED_FIELDS[name]:
        assert fname in fields, f"{name}.{fname} is relied on by other code"
    for f in raw["fields"]:
        assert f.get("doc"), f"{name}.{f['name']} has no doc"
        if f["name"] not in EXPECTED_FIELDS[name]:
            assert "default" in f, f"{name}.{f['name']}: added fields must be optional"
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if f["name"].endswith("_at") or f["name"] in ("at", "start"):
            assert {"type": "long", "logicalType": "timestamp-millis"} in types, f["name"]


def test_contract_types():
    ce = {f["name"]: f for f in codec.schema("call_event")["fields"]}
    assert ce["event_type"]["type"]["symbols"] == ["CALL", "TRANSCRIPTION", "SMS"]
    assert ce["outcome"]["type"][0] == "null" and ce["outcome"]["default"] is None
    assert ce["outcome"]["type"][1]["symbols"] == ["MISSED", "VOICEMAIL", "ANSWERED", "OTHER"]
    assert ce["direction"]["type"]["symbols"] == ["INBOUND", "OUTBOUND"]
    assert ce["duration_s"]["type"] == ["null", "int"]
    ac = {f["name"]: f for f in codec.schema("action_command")["fields"]}
    assert ac["kind"]["type"]["symbols"] == ["SEND_SMS", "NOTIFY_STAFF", "CREATE_TASK", "ALERT_MANAGER"]
    assert ac["scenario"]["type"]["symbols"] == ["NEW_PATIENT", "URGENT_EXISTING", "RESCHEDULE", "GENERAL_INQUIRY"]
    assert ac["priority"]["type"]["symbols"] == ["LOW", "NORMAL", "HIGH", "URGENT"]
    assert ac["priority"]["default"] == "NORMAL"
    assert ac["params"] == {**ac["params"], "type": {"type": "map", "values": "string"}, "default": {}}
    oc = {f["name"]: f for f in codec.schema("outcome")["fields"]}
    assert oc["state"]["type"]["symbols"] == [
        "OPEN",
        "RESPONDED",
        "ESCALATED",
        "CONVERTED",
        "ESCALATED_AND_CLOSED",
        "EXPIRED",
        "SUPPRESSED",
    ]
    assert oc["response_latency_ms"]["type"] == ["null", "long"]
    pc = {f["name"]: f for f in codec.schema("practice_config")["fields"]}
    assert pc["windows"]["type"] == {"type": "map", "values": "long"}
    assert pc["quiet_hours_start"]["default"] == "08:00" and pc["quiet_hours_end"]["default"] == "21:00"
    assert pc["blocked_numbers"]["default"] == [] and pc["config_json"]["default"] is None
    tu = {f["name"]: f for f in codec.schema("task_update")["fields"]}
    assert tu["action"]["type"]["symbols"] == ["CLAIM", "COMPLETE", "REASSIGN"]
    dl = {f["name"]: f for f in codec.schema("dead_letter")["fields"]}
    assert dl["raw"]["type"] == "bytes"


def test_history_v1_holds_every_schema():
    for name in codec.SCHEMA_NAMES:
        assert (SCHEMA_DIR / "history" / "v1" / f"{name}.avsc").exists(), name


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name,i", CASES)
def test_round_trip_realistic_records(name, i):
    record = RECORDS[name][i]
    data = codec.encode(name, record)
    assert isinstance(data, bytes)
    decoded = codec.decode(name, data)
    assert decoded == expected_after_round_trip(name, record)
    for f in codec.schema(name)["fields"]:  # timestamps come back as plain int ms
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if any(isinstance(t, dict) and t.get("logicalType") == "timestamp-millis" for t in types):
            assert decoded[f["name"]] is None or type(decoded[f["name"]]) is int
    # the decoded form encodes to the same bytes
    assert codec.encode(name, decoded) == data


@pytest.mark.parametrize("name,i", CASES)
def test_body_is_plain_avro_and_matches_fastavro(name, i):
    record = RECORDS[name][i]
    data = codec.encode(name, record)
    raw = codec.schema(name)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(raw), record)
    assert data[10:] == buf.getvalue()
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(raw)) is not None


def test_aware_datetimes_become_utc_millis():
    rec = dict(RECORDS["call_event"][2])
    out = codec.decode("call_event", codec.encode("call_event", rec))
    assert out["occurred_at"] == 1_732_640_703_250
    assert out["received_at"] == 1_732_640_703_900  # 12:05:03.9 at UTC-5 = 17:05:03.9Z


def test_enums_come_back_as_plain_strings():
    out = codec.decode("action_command", codec.encode("action_command", RECORDS["action_command"][1]))
    assert type(out["kind"]) is str and out["kind"] == "CREATE_TASK"
    assert type(out["priority"]) is str and out["priority"] == "URGENT"


def test_str_enum_members_and_mappings_are_accepted():
    import enum
    from types import MappingProxyType

    class Kind(str, enum.Enum):
        SEND_SMS = "SEND_SMS"

    rec = dict(RECORDS["action_command"][0], kind=Kind.SEND_SMS)
    assert codec.decode("action_command", codec.encode("action_command", rec))["kind"] == "SEND_SMS"
    proxy = MappingProxyType(RECORDS["patient"][0])
    assert codec.decode("patient", codec.encode("patient", proxy))["phone"] == "+14155550123"


def test_extra_keys_are_ignored():
    rec = dict(RECORDS["patient"][1], __faust={"ns": "x"}, unknown="ignored")
    assert "unknown" not in codec.decode("patient", codec.encode("patient", rec))


# --------------------------------------------------------------------------- framing


def crc64_avro(data: bytes) -> int:
    """The Avro specification's reference CRC-64-AVRO (Rabin) fingerprint."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_crc64_reference_vector():
    # Avro's test vector: the fingerprint of the schema "null" is 7195948357588979594
    assert crc64_avro(b'"null"') == 7195948357588979594


@pytest.mark.parametrize("name", sorted(EXPECTED_FIELDS))
def test_single_object_framing(name):
    data = codec.encode(name, RECORDS[name][0])
    canonical = fastavro.schema.to_parsing_canonical_form(codec.schema(name)).encode()
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == crc64_avro(canonical).to_bytes(8, "little")
    assert codec.fingerprint(name) == data[2:10]


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc3",
        b"garbage",
        b"\xc3\x01\x00\x01\x02",
        b"\xc3\x01" + b"\xff" * 8 + b"\x02x",
        b"\x7b\x22json\x22: 1}",
        b"\x01\x00\x00\x00\x01hello",
    ],
)
def test_decode_garbage_raises_schema_decode_error(garbage):
    with pytest.raises(SchemaDecodeError):
        codec.decode("call_event", garbage)


def test_decode_errors_are_clear():
    good = codec.encode("call_event", RECORDS["call_event"][0])
    with pytest.raises(SchemaDecodeError, match="unrecognised framing"):
        codec.decode("call_event", b"xx" + good)
    with pytest.raises(SchemaDecodeError, match="unknown writer schema fingerprint"):
        codec.decode("call_event", b"\xc3\x01" + b"\x00" * 8 + good[10:])
    with pytest.raises(SchemaDecodeError, match="body does not decode"):
        codec.decode("call_event", good[:-3])
    with pytest.raises(SchemaDecodeError, match="trailing"):
        codec.decode("call_event", good + b"\x00")
    with pytest.raises(SchemaDecodeError, match="written with schema patient"):
        codec.decode("call_event", codec.encode("patient", RECORDS["patient"][0]))
    with pytest.raises(SchemaDecodeError, match="expected bytes"):
        codec.decode("call_event", "not bytes")
    assert issubclass(SchemaDecodeError, ValueError)


def test_decode_accepts_bytearray_and_memoryview():
    good = codec.encode("dead_letter", RECORDS["dead_letter"][1])
    assert codec.decode("dead_letter", bytearray(good)) == codec.decode("dead_letter", memoryview(good))
    assert type(codec.decode("dead_letter", bytearray(good))["raw"]) is bytes


def test_unknown_schema_name():
    with pytest.raises(UnknownSchemaError, match="unknown schema 'call_events'"):
        codec.encode("call_events", {})
    with pytest.raises(KeyError):
        codec.decode("nope", b"\xc3\x01")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change,message",
    [
        ({"caller": None}, "call_event.caller: expected string, got None"),
        ({"caller": 14155550123}, "call_event.caller: expected string, got an int of 11 digits"),
        ({"caller": 5}, "call_event.caller: expected string, got 5 (int)"),
        (
            {"event_type": "VOICE"},
            "call_event.event_type: expected enum CallEventType {CALL, TRANSCRIPTION, SMS}, got 'VOICE'",
        ),
        ({"outcome": "missed"}, "call_event.outcome: expected null | enum CallOutcome"),
        ({"duration_s": "38"}, "call_event.duration_s: expected null | int, got a str of 2 chars"),
        ({"duration_s": 2**40}, "call_event.duration_s: expected null | int"),
        ({"duration_s": True}, "call_event.duration_s: expected null | int, got True (bool)"),
        ({"occurred_at": 1.7e12}, "call_event.occurred_at: expected timestamp-millis"),
        ({"occurred_at": "2024-11-26T16:53:20Z"}, "call_event.occurred_at: expected timestamp-millis"),
        ({"occurred_at": datetime(2024, 11, 26, 16, 53)}, "call_event.occurred_at: naive datetime"),
    ],
)
def test_invalid_record_is_rejected_naming_the_field(change, message):
    rec = dict(RECORDS["call_event"][0], **change)
    with pytest.raises(SchemaValidationError) as exc:
        codec.encode("call_event", rec)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_error_messages_do_not_echo_phone_numbers_or_text():
    rec = dict(
        RECORDS["call_event"][1],
        duration_s="+14155550123",
        transcript=["call me back"],
        direction="Maria Lopez calling",
    )
    with pytest.raises(SchemaValidationError) as exc:
        codec.encode("call_event", rec)
    msg = str(exc.value)
    assert "call_event.duration_s" in msg and "call_event.transcript" in msg and "call_event.direction" in msg
    assert "+14155550123" not in msg and "call me" not in msg and "Maria" not in msg


def test_missing_required_field_is_named():
    rec = {k: v for k, v in RECORDS["call_event"][0].items() if k != "practice_id"}
    with pytest.raises(SchemaValidationError, match=r"call_event\.practice_id: missing required field"):
        codec.encode("call_event", rec)


def test_bad_map_value_and_array_item_are_located():
    rec = dict(RECORDS["action_command"][0], params={"booking_link": "https://x", "attempt": 2})
    with pytest.raises(
        SchemaValidationError, match=r"action_command\.params\['attempt'\]: expected string, got 2 \(int\)"
    ):
        codec.encode("action_command", rec)
    rec = dict(RECORDS["practice_config"][0], phone_numbers=["+14155550100", None])
    with pytest.raises(SchemaValidationError, match=r"practice_config\.phone_numbers\[1\]: expected string, got None"):
        codec.encode("practice_config", rec)
    rec = dict(RECORDS["practice_config"][0], windows={"first_sms_hold": "45s"})
    with pytest.raises(
        SchemaValidationError,
        match=r"practice_config\.windows\['first_sms_hold'\]: expected long, got a str of 3 chars",
    ):
        codec.encode("practice_config", rec)


def test_several_problems_are_all_reported():
    rec = dict(RECORDS["patient"][0], phone=None, deceased="no")
    with pytest.raises(SchemaValidationError) as exc:
        codec.encode("patient", rec)
    assert "patient.phone" in str(exc.value) and "patient.deceased" in str(exc.value)


def test_not_a_mapping():
    with pytest.raises(SchemaValidationError, match="patient: expected a record"):
        codec.encode("patient", ["+14155550123"])


def test_validate_function():
    codec.validate("outcome", RECORDS["outcome"][0])
    with pytest.raises(SchemaValidationError, match="outcome.state"):
        codec.validate("outcome", dict(RECORDS["outcome"][0], state="DONE"))


# --------------------------------------------------------------------------- fast path == fastavro

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.sampled_from(["CALL", "SMS", "MISSED", "NORMAL", "SEND_SMS", "NEW_PATIENT", "INBOUND", "OPEN"]),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.datetimes(timezones=st.just(UTC)),
)


@settings(
    max_examples=int(os.environ.get("SCHEMAS_FUZZ_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(name=st.sampled_from(sorted(EXPECTED_FIELDS)), data=st.data())
def test_fast_encoder_agrees_with_fastavro(name, data):
    """Mutated realistic records: accepted => fastavro validates it and writes the same bytes."""
    rec = dict(data.draw(st.sampled_from(RECORDS[name])))
    fields = [f["name"] for f in codec.schema(name)["fields"]]
    for fname in data.draw(st.lists(st.sampled_from(fields), max_size=3)):
        if data.draw(st.booleans()):
            rec[fname] = data.draw(_values)
        else:
            rec.pop(fname, None)
    s = codec.default_codec()._get(name)
    try:
        out = codec.encode(name, rec)
    except SchemaValidationError:
        assert (
            not fastavro.validation.validate(rec, s.write, raise_errors=False)
            or any(isinstance(v, datetime) and v.tzinfo is None for v in rec.values())
            or _unencodable(s, rec)
        )
        return
    assert fastavro.validation.validate(rec, s.write, raise_errors=False)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, s.write, rec)
    assert out[10:] == buf.getvalue()
    assert codec.decode(name, out) == fastavro.schemaless_reader(io.BytesIO(out[10:]), s.read)


def _unencodable(s, rec) -> bool:
    try:
        fastavro.schemaless_writer(io.BytesIO(), s.write, rec)
    except Exception:
        return True
    return False


@settings(max_examples=int(os.environ.get("SCHEMAS_FUZZ_EXAMPLES", "400")), deadline=None, database=None)
@given(name=st.sampled_from(sorted(EXPECTED_FIELDS)), data=st.data())
def test_fast_decoder_agrees_with_fastavro_on_corrupted_bytes(name, data):
    good = codec.encode(name, data.draw(st.sampled_from(RECORDS[name])))
    body = bytearray(good[10:])
    for _ in range(data.draw(st.integers(0, 3))):
        if body:
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    body = bytes(body[:cut]) if data.draw(st.booleans()) else bytes(body)
    s = codec.default_codec()._get(name)
    fo = io.BytesIO(body)
    try:
        expected = fastavro.schemaless_reader(fo, s.read)
        if fo.tell() != len(body):
            expected = SchemaDecodeError
    except Exception:
        expected = SchemaDecodeError
    try:
        got = codec.decode(name, good[:10] + body)
    except SchemaDecodeError:
        got = SchemaDecodeError
    assert got == expected


# --------------------------------------------------------------------------- Confluent framing


class FakeSchema:
    def __init__(self, schema_str: str, schema_type: str = "AVRO") -> None:
        self.schema_str = schema_str
        self.schema_type = schema_type


class FakeRegistry:
    """The two calls of confluent_kafka's SchemaRegistryClient the codec uses."""

    def __init__(self, first_id: int = 100_001) -> None:
        self.by_id: dict[int, str] = {}
        self.subjects: dict[tuple[str, str], int] = {}
        self.next_id = first_id
        self.calls: list[tuple] = []

    def register_schema(self, subject_name, schema, normalize_schemas=False):
        self.calls.append(("register", subject_name))
        schema_str = schema.schema_str
        for sid, s in self.by_id.items():
            if s == schema_str:
                self.subjects[(subject_name, schema_str)] = sid
                return sid
        sid, self.next_id = self.next_id, self.next_id + 1
        self.by_id[sid] = schema_str
        self.subjects[(subject_name, schema_str)] = sid
        return sid

    def get_schema(self, schema_id, subject_name=None, fmt=None):
        self.calls.append(("get", schema_id))
        if schema_id not in self.by_id:
            raise KeyError(f"schema {schema_id} not found")
        return FakeSchema(self.by_id[schema_id])


def test_confluent_framing_with_a_registry():
    reg = FakeRegistry()
    codec.set_registry(reg)
    rec = RECORDS["call_event"][0]
    data = codec.encode("call_event", rec, topic="ringback.call-events")
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 100_001
    assert reg.calls == [("register", "ringback.call-events-value")]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(codec.schema("call_event")), rec)
    assert data[5:] == buf.getvalue()
    assert codec.encode("call_event", rec, topic="ringback.call-events") == data
    assert reg.calls == [("register", "ringback.call-events-value")]  # id cached
    assert codec.decode("call_event", data) == expected_after_round_trip("call_event", rec)
    # default subject: <name>-value
    codec.encode("outcome", RECORDS["outcome"][0])
    assert reg.calls[-1] == ("register", "outcome-value")
    # a fresh process (cold cache) fetches the writer schema by id
    other = AvroCodec(registry=reg)
    assert other.decode("call_event", data) == expected_after_round_trip("call_event", rec)
    assert ("get", 100_001) in reg.calls
    # both framings decode whatever the configuration
    single = AvroCodec(registry=None).encode("call_event", rec)
    assert single[:2] == b"\xc3\x01"
    assert other.decode("call_event", single) == codec.decode("call_event", data)


def test_confluent_framing_errors():
    reg = FakeRegistry()
    data = AvroCodec(registry=reg).encode("patient", RECORDS["patient"][0])
    with pytest.raises(SchemaRegistryError, match="SCHEMA_REGISTRY_URL"):
        AvroCodec(registry=None).decode("patient", data)
    with pytest.raises(SchemaDecodeError, match="schema id 99 is unknown"):
        AvroCodec(registry=reg).decode("patient", b"\x00\x00\x00\x00\x63" + data[5:])
    with pytest.raises(SchemaDecodeError, match="record Patient, not CallEvent"):
        AvroCodec(registry=reg).decode("call_event", data)
    with pytest.raises(SchemaDecodeError, match="truncated"):
        AvroCodec(registry=reg).decode("patient", b"\x00\x00\x01")

    class Down(FakeRegistry):
        def register_schema(self, *a, **k):
            raise ConnectionError("registry down")

    with pytest.raises(SchemaRegistryError, match="registry down"):
        AvroCodec(registry=Down()).encode("patient", RECORDS["patient"][0])


def test_registry_url_from_environment(monkeypatch):
    reg = FakeRegistry()
    made = []

    def fake_client(url):
        made.append(url)
        return reg

    monkeypatch.setattr(codec, "_make_registry_client", fake_client)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://registry.internal:8081")
    c = AvroCodec()
    data = c.encode("task_update", RECORDS["task_update"][0])
    assert data[:1] == b"\x00" and made == ["http://registry.internal:8081"]
    c.encode("task_update", RECORDS["task_update"][1])
    assert made == ["http://registry.internal:8081"]  # client built once per URL
    monkeypatch.delenv("SCHEMA_REGISTRY_URL")
    assert c.encode("task_update", RECORDS["task_update"][0])[:2] == b"\xc3\x01"
    assert c.decode("task_update", data)["action"] == "COMPLETE"  # id cached from encode


# --------------------------------------------------------------------------- evolution


def _evolved_dir(tmp_path: Path, mutate) -> Path:
    """A schema folder whose current call_event is mutate(v1); history/v1 = today's files."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR / "history" / "v1", root / "history" / "v1")
    for p in (SCHEMA_DIR / "history" / "v1").glob("*.avsc"):
        shutil.copy(p, root / p.name)
    raw = json.loads((root / "call_event.avsc").read_text())
    mutate(raw)
    (root / "call_event.avsc").write_text(json.dumps(raw, indent=2))
    return root


def _add_optional_field(raw):
    raw["fields"].append(
        {
            "name": "answered_by",
            "type": ["null", "string"],
            "default": None,
            "doc": "Answering-machine detection result (Twilio AnsweredBy).",
        }
    )


def _add_required_field(raw):
    raw["fields"].append({"name": "carrier", "type": "string", "doc": "Carrier name."})


def _remove_enum_symbol(raw):
    et = next(f for f in raw["fields"] if f["name"] == "event_type")
    et["type"]["symbols"].remove("SMS")


def _int_to_string(raw):
    f = next(f for f in raw["fields"] if f["name"] == "duration_s")
    f["type"] = ["null", "string"]


def _widen_int_to_long(raw):
    f = next(f for f in raw["fields"] if f["name"] == "duration_s")
    f["type"] = ["null", "long"]


def test_old_records_read_after_a_compatible_evolution(tmp_path):
    root = _evolved_dir(tmp_path, _add_optional_field)
    old = AvroCodec(SCHEMA_DIR / "history" / "v1", registry=None)  # a v1 producer
    new = AvroCodec(root, registry=None)  # an upgraded consumer
    rec = RECORDS["call_event"][1]
    old_bytes = old.encode("call_event", rec)
    assert old_bytes[2:10] != new.fingerprint("call_event")
    out = new.decode("call_event", old_bytes)
    assert out == {**expected_after_round_trip("call_event", rec), "answered_by": None}
    new_bytes = new.encode("call_event", dict(rec, answered_by="machine_end_beep"))
    assert new.decode("call_event", new_bytes)["answered_by"] == "machine_end_beep"
    assert compat.check_all(root) and not any(compat.check_all(root).values())
    # without the history copy the old fingerprint is unknown: a clear error
    shutil.rmtree(root / "history")
    with pytest.raises(SchemaDecodeError, match="unknown writer schema fingerprint"):
        AvroCodec(root, registry=None).decode("call_event", old_bytes)


def test_old_records_read_after_int_to_long_promotion(tmp_path):
    root = _evolved_dir(tmp_path, _widen_int_to_long)
    old_bytes = AvroCodec(SCHEMA_DIR / "history" / "v1", registry=None).encode("call_event", RECORDS["call_event"][1])
    assert AvroCodec(root, registry=None).decode("call_event", old_bytes)["duration_s"] == 38
    assert compat.check_backward(codec.schema("call_event"), json.loads((root / "call_event.avsc").read_text())) == []


def test_compat_passes_for_the_current_schemas():
    results = compat.check_all()
    assert set(results) == {f"{n} vs history/v1" for n in codec.SCHEMA_NAMES}
    assert all(problems == [] for problems in results.values()), results
    assert compat.main(["-q"]) == 0


def test_compat_passes_for_a_new_optional_field_and_old_data_is_readable():
    old = codec.schema("call_event")
    new = copy.deepcopy(old)
    _add_optional_field(new)
    assert compat.check_backward(old, new) == []
    w, r = fastavro.parse_schema(old), fastavro.parse_schema(copy.deepcopy(new))
    for rec in compat.sample_records(old) + RECORDS["call_event"]:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, rec)
        buf.seek(0)
        assert fastavro.schemaless_reader(buf, w, r)["answered_by"] is None


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (_add_required_field, "CallEvent.carrier: new field without a default"),
        (_remove_enum_symbol, "CallEvent.event_type: enum CallEventType symbol 'SMS' removed"),
        (_int_to_string, "CallEvent.duration_s: union branch int of the old schema has no matching branch"),
    ],
)
def test_compat_fails_for_incompatible_changes(mutate, expected, tmp_path):
    old = codec.schema("call_event")
    new = copy.deepcopy(old)
    mutate(new)
    problems = compat.check_backward(old, new)
    assert problems and expected in problems[0], problems
    assert any("not readable with the new schema" in p for p in problems)  # fastavro agrees
    root = _evolved_dir(tmp_path, mutate)
    assert compat.main(["--dir", str(root), "-q"]) == 1


def test_compat_more_rules():
    old = codec.schema("outcome")
    # a removed field is fine for readers; a renamed enum is not; a changed logical type is flagged
    new = copy.deepcopy(old)
    new["fields"] = [f for f in new["fields"] if f["name"] != "reason"]
    assert compat.check_backward(old, new) == []
    new = copy.deepcopy(old)
    next(f for f in new["fields"] if f["name"] == "state")["type"]["name"] = "OutcomeState"
    assert any("renamed" in p for p in compat.check_backward(old, new))
    new = copy.deepcopy(old)
    next(f for f in new["fields"] if f["name"] == "at")["type"]["logicalType"] = "timestamp-micros"
    assert any("logical type changed" in p for p in compat.check_backward(old, new))
    # an enum default makes a removed symbol readable (Avro resolution rule)
    old_ce = codec.schema("call_event")
    new_ce = copy.deepcopy(old_ce)
    oc = next(f for f in new_ce["fields"] if f["name"] == "outcome")
    oc["type"][1]["symbols"].remove("ANSWERED")
    assert compat.check_backward(old_ce, new_ce) == []
    # a new schema that does not parse
    assert "does not parse" in compat.check_backward(old, {"type": "record", "name": "X", "fields": [{"name": "a"}]})[0]


def test_compat_reports_a_deleted_schema(tmp_path):
    root = _evolved_dir(tmp_path, lambda raw: None)
    (root / "flag.avsc").unlink()
    results = compat.check_all(root)
    assert "removed" in results["flag vs history/v1"][0]


# --------------------------------------------------------------------------- faust


def test_faust_codecs():
    from faust.serializers import codecs as faust_codecs

    registered = codec.register_faust_codecs()
    assert set(registered) == {f"avro_{n}" for n in codec.SCHEMA_NAMES}
    rec = RECORDS["call_event"][0]
    data = faust_codecs.dumps("avro_call_event", rec)
    assert data == codec.encode("call_event", rec)
    assert faust_codecs.loads("avro_call_event", data) == expected_after_round_trip("call_event", rec)
    c = faust_codecs.get_codec("avro_action_command")
    assert isinstance(c, codec.AvroFaustCodec) and c.schema_name == "action_command"
    # chaining clones the codec with its kwargs (faust: type(self)(children=..., **kwargs))
    chained = c | faust_codecs.get_codec("binary")
    rec = RECORDS["action_command"][0]
    assert chained.loads(chained.dumps(rec)) == expected_after_round_trip("action_command", rec)
    with pytest.raises(SchemaValidationError):
        faust_codecs.dumps("avro_call_event", {"caller": None})
    with pytest.raises(UnknownSchemaError):
        codec.AvroFaustCodec("no_such_schema")


def test_faust_record_values_are_encoded():
    import faust

    class Flag(faust.Record, serializer="avro_flag"):
        practice_id: str
        flag_id: str
        patient_id: str
        code: str
        status: str
        updated_at: int

    codec.register_faust_codecs(["flag"])
    f = Flag(
        practice_id="p",
        flag_id="Flag/1",
        patient_id="Patient/1",
        code="callback-requested",
        status="active",
        updated_at=T0,
    )
    out = codec.decode("flag", f.dumps())
    assert out["code"] == "callback-requested" and out["callback_requested"] is False


# --------------------------------------------------------------------------- speed


def test_encode_decode_call_event_is_fast():
    rec = RECORDS["call_event"][0]
    data = codec.encode("call_event", rec)
    n = 5000
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            codec.decode("call_event", codec.encode("call_event", rec))
        best = min(best, (time.perf_counter() - t) / n)
    # ~10 us on a laptop; a generous bound so that a loaded CI machine does not flake
    assert best < 200e-6, f"encode+decode took {best * 1e6:.1f} us"
    assert codec.decode("call_event", data)["caller"] == "+14155550123"
