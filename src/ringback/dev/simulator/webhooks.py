"""Webhooks as the phone providers send them, signed: the builders the traffic simulator
posts and the gateway tests use (`tests/support/webhooks.py` re-exports them).

Payload shapes follow the vendor material in tests/vendor/ (Twilio callback
fields from its README and OpenAPI enums, Dialpad's CallProto and JWT vector, Vonage's
webhook reference, RingCentral's notification format as the README describes it).
Each builder returns a `Webhook` (path, body, headers) that any HTTP client can post;
the payload builders take the times they report (defaults: fixed example times, which
the unit tests rely on).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode

import jwt
from twilio.request_validator import RequestValidator

from ringback.sources.twilio.callbacks import Correlation

ACCOUNT_SID = "AC" + "0" * 31 + "1"


@dataclass
class Webhook:
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def with_body(self, body: bytes) -> Webhook:
        return Webhook(self.path, body, dict(self.headers))

    def with_headers(self, **headers: str) -> Webhook:
        return Webhook(self.path, self.body, {**self.headers, **headers})


# ---------------------------------------------------------------- Twilio
TWILIO_VOICE_STATUS = "/webhooks/twilio/voice/status"
TWILIO_TRANSCRIPTION = "/webhooks/twilio/voice/transcription"
TWILIO_SMS_INBOUND = "/webhooks/twilio/sms/inbound"
TWILIO_SMS_STATUS = "/webhooks/twilio/sms/status"


def twilio(base_url: str, path: str, params: dict[str, str], token: str | None) -> Webhook:
    """A form POST signed like Twilio: HMAC-SHA1 over the full URL and the sorted params."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token is not None:
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(base_url + path, params)
    return Webhook(path, urlencode(params).encode(), headers)


def twilio_voice_status(
    call_sid: str, caller: str, called: str, status: str = "no-answer", **extra: str
) -> dict[str, str]:
    params = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": called,
        "CallStatus": status,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "Timestamp": "Tue, 24 Nov 2026 15:04:05 +0000",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "2",
        "Caller": caller,
        "Called": called,
    }
    if status == "completed":
        params.setdefault("CallDuration", "0")
    params.update(extra)
    return params


def twilio_transcription(
    call_sid: str, caller: str, called: str, text: str = "Hi, this is a test.", status: str = "completed"
) -> dict[str, str]:
    params = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": called,
        "CallStatus": "completed",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "TranscriptionSid": "TR" + call_sid[2:],
        "TranscriptionStatus": status,
        "TranscriptionType": "fast",
        "TranscriptionUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Transcriptions/TR"
        + call_sid[2:],
        "RecordingSid": "RE" + call_sid[2:],
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE" + call_sid[2:],
        "url": "https://example.org/twiml",
    }
    if status == "completed":
        params["TranscriptionText"] = text
    return params


# ---------------------------------------------------------------- Twilio: a call forwarded with <Dial>
TWILIO_VOICE_INCOMING = "/webhooks/twilio/voice/incoming"
TWILIO_VOICE_DIAL = "/webhooks/twilio/voice/dial"
TWILIO_VOICE_AMD = "/webhooks/twilio/voice/amd"
TWILIO_VOICE_VOICEMAIL = "/webhooks/twilio/voice/voicemail"
FORWARD_MISSED, FORWARD_MACHINE, FORWARD_ANSWERED = "missed", "machine", "answered"


def twilio_correlated(path: str, practice_id: str, call_sid: str, caller: str, called: str, amd: bool = False) -> str:
    """A callback path with the query the ready-made call flow gives Twilio (sources/twilio/call_flow.py);
    `amd`: the flow runs machine detection on the legs."""
    return f"{path}?{Correlation(practice_id, call_sid, caller, called, amd).query()}"


def twilio_incoming(call_sid: str, caller: str, called: str) -> dict[str, str]:
    """The incoming-call webhook of a practice number (the call is ringing at Twilio)."""
    params = twilio_voice_status(call_sid, caller, called, "ringing")
    for key in ("Timestamp", "CallbackSource", "SequenceNumber"):
        params.pop(key)
    return params


def twilio_dial_action(
    call_sid: str, caller: str, called: str, dial_status: str, dial_sid: str | None, dial_duration_s: int | None = None
) -> dict[str, str]:
    """The `<Dial action>` request: the parent call's fields and the dialed call's outcome."""
    params = twilio_incoming(call_sid, caller, called)
    params.update(CallStatus="in-progress", DialCallStatus=dial_status, DialBridged=str(dial_status == "completed"))
    if dial_sid is not None:
        params["DialCallSid"] = dial_sid
    if dial_duration_s is not None:
        params["DialCallDuration"] = str(dial_duration_s)
    return params


def twilio_leg_status(leg_sid: str, parent_sid: str, caller: str, front_desk: str, status: str, **extra: str) -> dict:
    """A dialed `<Number>`'s status callback (From: the caller, passed through as caller ID)."""
    params = twilio_voice_status(leg_sid, caller, front_desk, status, Direction="outbound-dial", **extra)
    params["ParentCallSid"] = parent_sid
    return params


def twilio_amd(leg_sid: str, answered_by: str, detection_ms: int = 2400) -> dict[str, str]:
    """An `amdStatusCallback` request: the leg, the verdict, nothing else."""
    return {
        "CallSid": leg_sid,
        "AccountSid": ACCOUNT_SID,
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": str(detection_ms),
    }


def twilio_recorded(call_sid: str, caller: str, called: str, seconds: int = 20) -> dict[str, str]:
    """The `<Record action>` request of the voicemail fallback."""
    params = twilio_incoming(call_sid, caller, called)
    params.update(
        CallStatus="in-progress",
        RecordingSid="RE" + call_sid[2:],
        RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE{call_sid[2:]}",
        RecordingDuration=str(seconds),
        Digits="hangup",
    )
    return params


def twilio_forwarded(
    base_url: str,
    token: str,
    practice_id: str,
    call_sid: str,
    caller: str,
    called: str,
    front_desk: str,
    outcome: str,
    ring_s: int = 20,
    talk_s: int = 95,
    voicemail_s: int | None = None,
    stamp: str = "Tue, 24 Nov 2026 15:04:05 +0000",
    machine_detection: bool = True,
) -> list[Webhook]:
    """The callbacks of one call through the ready-made flow, in the order Twilio sends them:
    `missed` (nobody picks up: Dial action no-answer, then the parent `completed` after the
    ringing time), `machine` (a cell phone's voicemail answers: the leg `answered`, AMD
    machine_start, the Dial `completed`), `answered` (a person: the leg `answered` at once,
    with machine detection the AMD verdict `human` seconds later; the Dial and the parent
    `completed` when the conversation ends). `voicemail_s`: after a
    miss the caller leaves a voicemail that long (the `<Record action>`). `stamp`: the status
    callbacks' `Timestamp` (RFC 2822, to the second, as Twilio sends it)."""
    leg = "CA" + call_sid[2:][::-1]

    def signed(path: str, params: dict[str, str], correlated: bool = True) -> Webhook:
        url = twilio_correlated(path, practice_id, call_sid, caller, called, machine_detection) if correlated else path
        return twilio(base_url, url, params, token)

    hooks = [signed(TWILIO_VOICE_INCOMING, twilio_incoming(call_sid, caller, called), correlated=False)]
    if outcome == FORWARD_MISSED:
        hooks.append(signed(TWILIO_VOICE_DIAL, twilio_dial_action(call_sid, caller, called, "no-answer", leg)))
        hooks.append(
            signed(
                TWILIO_VOICE_STATUS,
                twilio_leg_status(leg, call_sid, caller, front_desk, "no-answer", SequenceNumber="1", Timestamp=stamp),
            )
        )
        parent_s = ring_s
        if voicemail_s is not None:
            hooks.append(signed(TWILIO_VOICE_VOICEMAIL, twilio_recorded(call_sid, caller, called, voicemail_s)))
            parent_s += voicemail_s + 8  # the greeting
    else:
        answered = twilio_leg_status(
            leg, call_sid, caller, front_desk, "in-progress", SequenceNumber="0", Timestamp=stamp
        )
        hooks.append(signed(TWILIO_VOICE_STATUS, answered))
        if outcome == FORWARD_MACHINE:
            hooks.append(signed(TWILIO_VOICE_AMD, twilio_amd(leg, "machine_start")))
        elif machine_detection:  # the verdict that says the leg's `answered` was a person
            hooks.append(signed(TWILIO_VOICE_AMD, twilio_amd(leg, "human")))
        timing = {"CallDuration": str(talk_s), "SequenceNumber": "1", "Timestamp": stamp}
        ended = twilio_leg_status(leg, call_sid, caller, front_desk, "completed", **timing)
        hooks.append(signed(TWILIO_VOICE_STATUS, ended))
        hooks.append(signed(TWILIO_VOICE_DIAL, twilio_dial_action(call_sid, caller, called, "completed", leg, talk_s)))
        parent_s = ring_s + talk_s
    parent = twilio_voice_status(call_sid, caller, called, "completed", CallDuration=str(parent_s), Timestamp=stamp)
    hooks.append(signed(TWILIO_VOICE_STATUS, parent, correlated=False))
    return hooks


def twilio_sms_inbound(message_sid: str, sender: str, practice_number: str, body: str) -> dict[str, str]:
    return {
        "ToCountry": "US",
        "ToState": "IL",
        "SmsMessageSid": message_sid,
        "NumMedia": "0",
        "ToCity": "CHICAGO",
        "FromZip": "94105",
        "SmsSid": message_sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": body,
        "FromCountry": "US",
        "To": practice_number,
        "ToZip": "60601",
        "NumSegments": "1",
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }


def twilio_sms_status(
    message_sid: str, patient: str, sender: str, status: str = "delivered", error_code: str | None = None
) -> dict[str, str]:
    params = {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": patient,
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params


# ---------------------------------------------------------------- RingCentral
RINGCENTRAL = "/webhooks/ringcentral"


def ringcentral(notification: dict, token: str | None) -> Webhook:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Verification-Token"] = token
    return Webhook(RINGCENTRAL, json.dumps(notification).encode(), headers)


def ringcentral_handshake(validation_token: str) -> Webhook:
    return Webhook(RINGCENTRAL, b"", {"Validation-Token": validation_token, "Content-Type": "application/json"})


def ringcentral_session(
    session_id: str,
    caller: str,
    called: str,
    code: str,
    reason: str | None = None,
    missed: bool = False,
    direction: str = "Inbound",
    event_time: str = "2026-11-24T15:04:05.123Z",
) -> dict:
    """A telephony-session notification with one party (account-level subscription)."""
    status: dict = {"code": code, "rcc": False}
    if reason:
        status["reason"] = reason
    ours, theirs = (
        {"phoneNumber": called, "name": "Front desk", "extensionId": "400112233008"},
        {"phoneNumber": caller, "name": "WIRELESS CALLER"},
    )
    party = {
        "accountId": "400112233004",
        "extensionId": "400112233008",
        "id": f"p-{session_id}-1",
        "direction": direction,
        "to": ours if direction == "Inbound" else theirs,
        "from": theirs if direction == "Inbound" else ours,
        "recordings": [],
        "status": status,
        "missedCall": missed,
        "standAlone": False,
        "muted": False,
    }
    return {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{session_id}/{code}/{reason}/{missed}")),
        "event": "/restapi/v1.0/account/~/telephony/sessions",
        "timestamp": event_time,
        "subscriptionId": "b7f4a3c1-0000-4000-8000-000000000001",
        "ownerId": "400112233004",
        "body": {
            "sequence": 7,
            "sessionId": "4000" + session_id[-6:],
            "telephonySessionId": session_id,
            "serverId": "10.13.22.241.TAM",
            "eventTime": event_time,
            "origin": {"type": "Call"},
            "parties": [party],
        },
    }


RC_ACCOUNT = "400112233004"


def ringcentral_party(
    session_id: str,
    n: int,
    code: str,
    *,
    frm: dict,
    to: dict,
    direction: str = "Inbound",
    extension_id: str | None = None,
    reason: str | None = None,
    missed: bool = False,
) -> dict:
    """Party `n` of a session as RingCentral reports it: `extension_id` for a party an
    extension owns (a person, an IVR menu, a ring-group member), None for the PSTN side."""
    status: dict = {"code": code, "rcc": False}
    if reason:
        status["reason"] = reason
    party: dict = {"accountId": RC_ACCOUNT, "id": f"p-{session_id[2:]}-{n}", "direction": direction}
    if extension_id:
        party["extensionId"] = extension_id
    party.update(
        {"to": to, "from": frm, "status": status, "park": {}, "missedCall": missed, "standAlone": False, "muted": False}
    )
    return party


def ringcentral_notification(
    session_id: str, sequence: int, party: dict, event_time: str, extension_id: str | None = None
) -> dict:
    """One notification of an account-level subscription (RingCentral sends one party per
    notification; `event` names the extension when the party is an extension's)."""
    event = f"/restapi/v1.0/account/{RC_ACCOUNT}" + (f"/extension/{extension_id}" if extension_id else "")
    return {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{session_id}/{sequence}")),
        "event": event + "/telephony/sessions",
        "timestamp": event_time,
        "subscriptionId": "b7f4a3c1-0000-4000-8000-000000000001",
        "ownerId": RC_ACCOUNT,
        "body": {
            "sequence": sequence,
            "sessionId": "4000" + session_id[-6:],
            "telephonySessionId": session_id,
            "serverId": "10.13.22.241.TAM",
            "eventTime": event_time,
            "parties": [party],
            "origin": {"type": "Call"},
        },
    }


# ---------------------------------------------------------------- Dialpad
DIALPAD = "/webhooks/dialpad"


def dialpad(claims: dict, secret: str | None) -> Webhook:
    """With a secret the body is the compact JWT (HS256); without, plain JSON (as Dialpad does)."""
    if secret is None:
        return Webhook(DIALPAD, json.dumps(claims).encode(), {"Content-Type": "application/json"})
    return Webhook(DIALPAD, jwt.encode(claims, secret, algorithm="HS256").encode(), {"Content-Type": "application/jwt"})


def dialpad_call(
    call_id: int,
    state: str,
    caller: str,
    called: str,
    direction: str = "inbound",
    connected: bool = False,
    duration_ms: int = 0,
    **extra,
) -> dict:
    """A call event with the fields of Dialpad's CallProto (as in the vendor JWT vector)."""
    claims = {
        "call_id": call_id,
        "master_call_id": call_id,
        "state": state,
        "direction": direction,
        "date_started": 1772550245000,
        "date_rang": 1772550245000,
        "date_connected": 1772550250000 if connected else None,
        "date_ended": 1772550275000,
        "event_timestamp": 1772550275000,
        "external_number": caller,
        "internal_number": called,
        "target": {"id": 5000000001, "type": "office", "name": "Main Line", "phone": called},
        "contact": {"id": "synthetic", "type": "local", "name": "Caller", "phone": caller},
        "was_recorded": False,
        "duration": duration_ms,
        "total_duration": 30000,
    }
    claims.update(extra)
    return claims


# ---------------------------------------------------------------- Vonage
VONAGE = "/webhooks/vonage/event"


def vonage(payload: dict, secret: str | None, iat: int = 1_767_000_000, hash_body: bytes | None = None) -> Webhook:
    """An event webhook: compact JSON body, `Authorization: Bearer` JWT (HS256) whose
    `payload_hash` is the SHA-256 of the body (`hash_body` to sign another body)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        claims = {
            "iat": iat,
            "jti": str(uuid.uuid5(uuid.NAMESPACE_URL, body.decode())),
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(hash_body if hash_body is not None else body).hexdigest(),
            "api_key": "abcd1234",
            "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        }
        headers["Authorization"] = "Bearer " + jwt.encode(claims, secret, algorithm="HS256")
    return Webhook(VONAGE, body, headers)


def vonage_event(call_uuid: str, status: str, caller: str, called: str, direction: str = "inbound", **extra) -> dict:
    """Fields as in Vonage's webhook reference; numbers without the `+`."""
    payload = {
        "from": caller.lstrip("+"),
        "to": called.lstrip("+"),
        "uuid": call_uuid,
        "conversation_uuid": "CON-" + call_uuid,
        "status": status,
        "direction": direction,
        "timestamp": "2026-11-24T15:04:05.000Z",
    }
    if status == "completed":
        payload.update(
            {
                "end_time": "2026-11-24T15:06:05.000Z",
                "network": "US-FIXED",
                "duration": "120",
                "start_time": "2026-11-24T15:04:05.000Z",
                "rate": "0.00450000",
                "price": "0.00900000",
            }
        )
    if status in ("human", "machine"):
        payload["call_uuid"] = payload.pop("uuid")
        payload.pop("direction")
    payload.update(extra)
    return payload
