"""Sample records of every schema and schema-evolution helpers shared by the schemas tests."""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from ringback.schemas import codec

SCHEMA_DIR = codec.SCHEMA_DIR
T0 = 1_732_640_000_000  # 2024-11-26T16:53:20Z in epoch ms


def call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def message_sid() -> str:
    return "SM" + secrets.token_hex(16)


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
                "recording_url": (
                    f"https://api.twilio.com/2010-04-01/Accounts/AC{secrets.token_hex(16)}"
                    f"/Recordings/RE{secrets.token_hex(16)}"
                ),
                "transcript": (
                    "Hi, this is Maria, I need to reschedule my cleaning on Thursday to a different time. Thanks."
                ),
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
                "body": (
                    "Sunrise Family Dental: sorry we missed your call! Reply to book, or book here: "
                    "https://book.example.com/sunrise. Reply STOP to opt out."
                ),
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
        "task": [
            {
                "task_id": f"case-{sid}:clinical_callback",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "state": "COMPLETED",
                "caller": "+14155550123",
                "role": "nurse",
                "reason": "urgent: existing patient, no answer to the acknowledgement",
                "priority": "URGENT",
                "due_at": T0 + 15 * 60_000,
                "created_at": T0 + 60_000,
                "scenario": "URGENT_EXISTING",
                "step": "clinical_callback",
                "missed_at": T0,
                "details": {"todo": "Call the patient back.", "urgency_reason": "post-op pain"},
                "claimed_by": "jlee",
                "claimed_at": T0 + 10 * 60_000,
                "completed_by": "jlee",
                "completed_at": T0 + 20 * 60_000,
                "outcome": "reached_patient",
                "history": [
                    {"action": "CREATE", "actor": "ringback", "at": T0 + 60_000},
                    {"action": "CLAIM", "actor": "jlee", "at": T0 + 10 * 60_000},
                    {"action": "COMPLETE", "actor": "jlee", "at": T0 + 20 * 60_000},
                ],
                "updates": ["upd-0", "upd-1"],
            },
            {  # staff updates that arrived before their task
                "task_id": f"case-{sid}:callback_task",
                "case_id": f"case-{sid}",
                "practice_id": "sunrise-family-dental",
                "state": "PENDING",
                "pending_updates": [
                    {
                        "update_id": "upd-2",
                        "task_id": f"case-{sid}:callback_task",
                        "case_id": f"case-{sid}",
                        "practice_id": "sunrise-family-dental",
                        "action": "CLAIM",
                        "actor": "mgarcia",
                        "outcome": None,
                        "new_role": None,
                        "at": T0 + 60_000,
                    }
                ],
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


def evolved_dir(tmp_path: Path, mutate) -> Path:
    """A schema folder whose current call_event is mutate(v1); history/v1 = today's files."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR / "history" / "v1", root / "history" / "v1")
    for p in (SCHEMA_DIR / "history" / "v1").glob("*.avsc"):
        shutil.copy(p, root / p.name)
    raw = json.loads((root / "call_event.avsc").read_text())
    mutate(raw)
    (root / "call_event.avsc").write_text(json.dumps(raw, indent=2))
    return root


def add_optional_field(raw):
    raw["fields"].append(
        {
            "name": "answered_by",
            "type": ["null", "string"],
            "default": None,
            "doc": "Answering-machine detection result (Twilio AnsweredBy).",
        }
    )


def add_required_field(raw):
    raw["fields"].append({"name": "carrier", "type": "string", "doc": "Carrier name."})


def remove_enum_symbol(raw):
    et = next(f for f in raw["fields"] if f["name"] == "event_type")
    et["type"]["symbols"].remove("SMS")


def int_to_string(raw):
    f = next(f for f in raw["fields"] if f["name"] == "duration_s")
    f["type"] = ["null", "string"]


def widen_int_to_long(raw):
    f = next(f for f in raw["fields"] if f["name"] == "duration_s")
    f["type"] = ["null", "long"]
