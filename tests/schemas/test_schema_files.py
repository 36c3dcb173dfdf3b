"""The schema files: one per topic record, documented, self-contained, with the fields other code relies on."""

from __future__ import annotations

import json

import fastavro
import pytest

from ringback.schemas import codec
from tests.schemas.samples import RECORDS, SCHEMA_DIR

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
    "task": [
        "task_id",
        "case_id",
        "practice_id",
        "state",
        "caller",
        "role",
        "reason",
        "priority",
        "due_at",
        "created_at",
        "scenario",
        "step",
        "missed_at",
        "details",
        "claimed_by",
        "claimed_at",
        "completed_by",
        "completed_at",
        "outcome",
        "history",
        "updates",
        "pending_updates",
    ],
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
    tk = {f["name"]: f for f in codec.schema("task")["fields"]}
    assert tk["state"]["type"]["symbols"] == ["OPEN", "CLAIMED", "COMPLETED", "PENDING"]
    assert tk["priority"]["type"] == ac["priority"]["type"] and tk["priority"]["default"] == "NORMAL"
    assert tk["scenario"]["type"][1] == ac["scenario"]["type"]
    dl = {f["name"]: f for f in codec.schema("dead_letter")["fields"]}
    assert dl["raw"]["type"] == "bytes"


def test_history_v1_holds_every_schema():
    for name in codec.SCHEMA_NAMES:
        assert (SCHEMA_DIR / "history" / "v1" / f"{name}.avsc").exists(), name
