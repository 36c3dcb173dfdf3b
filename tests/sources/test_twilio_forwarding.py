"""A call forwarded with <Dial>: every Twilio signal → its call event, and the ready-made
flow's TwiML (pure functions; fields as Twilio's <Dial>, <Number> and AMD docs list them)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ringback.config.practices_file import ConfigError, parse_practices
from ringback.dev.simulator import webhooks as wh
from ringback.domain.practice import CallFlow
from ringback.sources import twilio
from ringback.sources.gateway import WEBHOOKS
from ringback.sources.twilio import call_flow

PARENT = "CA" + "a" * 32
LEG = "CA" + "b" * 32
CALLER, PRACTICE_NUMBER, DESK, CELL = "+14155550123", "+13125550100", "+13125550181", "+13125550182"
CORR = twilio.Correlation("maple", PARENT, CALLER, PRACTICE_NUMBER)
BASE = "https://gateway.example.org"


# ---------------------------------------------------------------- <Dial action>
@pytest.mark.parametrize(
    "status, duration, outcome",
    [
        ("no-answer", None, "MISSED"),
        ("busy", None, "MISSED"),
        ("failed", None, "MISSED"),
        ("canceled", None, "MISSED"),
        ("completed", 95, "ANSWERED"),
        ("answered", 95, "ANSWERED"),
        ("completed", 3, "MISSED"),  # a carrier or voicemail pickup that hung up at once
        ("completed", None, "ANSWERED"),
        ("in-progress", None, "OTHER"),
    ],
)
def test_dial_outcome(status, duration, outcome):
    assert twilio.dial_outcome(status, duration) == outcome
    params = wh.twilio_dial_action(PARENT, CALLER, PRACTICE_NUMBER, status, LEG, duration)
    assert twilio.dial_action_event(params, "maple", 1)["outcome"] == outcome


def test_dial_action_event_is_a_leg_verdict_on_the_parent_call():
    params = wh.twilio_dial_action(PARENT, CALLER, PRACTICE_NUMBER, "no-answer", LEG)
    event = twilio.dial_action_event(params, "maple", 7)
    assert event["event_id"] == f"twilio:{PARENT}:dial-no-answer"
    assert (event["provider_call_id"], event["leg_id"], event["signal"]) == (PARENT, LEG, "leg")
    assert (event["caller"], event["called"], event["direction"], event["practice_id"]) == (
        CALLER,
        PRACTICE_NUMBER,
        "INBOUND",
        "maple",
    )
    # A <Dial> that never placed a leg (an invalid front-desk number) has no DialCallSid.
    params.pop("DialCallSid")
    assert twilio.dial_action_event(params, "maple", 7)["leg_id"] is None


@pytest.mark.parametrize("over, msg", [({"DialCallStatus": ""}, "DialCallStatus"), ({"From": "anonymous"}, "From")])
def test_dial_action_malformed(over, msg):
    params = wh.twilio_dial_action(PARENT, CALLER, PRACTICE_NUMBER, "no-answer", LEG) | over
    with pytest.raises(twilio.PayloadError, match=msg):
        twilio.dial_action_event(params, "maple", 1)


# ---------------------------------------------------------------- parent and leg status callbacks
def test_the_parent_status_is_the_weakest_signal_and_outbound_calls_keep_none():
    completed = wh.twilio_voice_status(PARENT, CALLER, PRACTICE_NUMBER, "completed", CallDuration="25")
    event = twilio.voice_status_event(completed, "maple", 1)
    assert (event["outcome"], event["signal"], event["leg_id"]) == ("ANSWERED", "parent", None)
    outbound = wh.twilio_voice_status(PARENT, PRACTICE_NUMBER, CALLER, "completed", Direction="outbound-api")
    assert twilio.voice_status_event(outbound, "maple", 1)["signal"] is None
    assert not twilio.is_dialed_leg(completed) and not twilio.is_dialed_leg(outbound)


def test_a_leg_answered_by_a_person_is_answered_at_once():
    params = wh.twilio_leg_status(LEG, PARENT, CALLER, DESK, "in-progress")
    assert twilio.is_dialed_leg(params)
    [event] = twilio.leg_status_events(params, CORR, 5)
    assert event["event_id"] == f"twilio:{PARENT}:answered-{LEG}"
    assert (event["outcome"], event["signal"], event["leg_id"], event["provider_call_id"]) == (
        "ANSWERED",
        "leg",
        LEG,
        PARENT,
    )
    # keyed practice|caller like every other signal of the call: the patient, not the front desk
    assert (event["caller"], event["called"], event["direction"]) == (CALLER, PRACTICE_NUMBER, "INBOUND")
    human = wh.twilio_leg_status(LEG, PARENT, CALLER, DESK, "in-progress", AnsweredBy="human")
    assert twilio.leg_status_events(human, CORR, 5)[0]["outcome"] == "ANSWERED"


@pytest.mark.parametrize("status", ["initiated", "ringing", "completed", "no-answer", "busy", "canceled", "failed"])
def test_the_legs_other_statuses_add_nothing(status):
    params = wh.twilio_leg_status(LEG, PARENT, CALLER, DESK, status, CallDuration="300")
    assert twilio.leg_status_events(params, CORR, 5) == []


def test_a_leg_callback_carrying_a_machine_verdict_is_the_machine_signal():
    params = wh.twilio_leg_status(LEG, PARENT, CALLER, CELL, "completed", AnsweredBy="machine_end_beep")
    [event] = twilio.leg_status_events(params, CORR, 5)
    assert event["event_id"] == f"twilio:{PARENT}:machine-{LEG}"
    assert (event["outcome"], event["signal"]) == ("MISSED", "machine")


def test_a_leg_of_another_call_than_its_url_says_is_refused():
    params = wh.twilio_leg_status(LEG, "CA" + "c" * 32, CALLER, DESK, "in-progress")
    with pytest.raises(twilio.PayloadError, match="ParentCallSid"):
        twilio.leg_status_events(params, CORR, 5)


# ---------------------------------------------------------------- AMD
@pytest.mark.parametrize("answered_by", sorted(twilio.MACHINE_ANSWERS))
def test_every_machine_verdict_is_a_miss_of_that_leg(answered_by):
    [event] = twilio.amd_events(wh.twilio_amd(LEG, answered_by), CORR, 9)
    assert event["event_id"] == f"twilio:{PARENT}:machine-{LEG}"
    assert (event["outcome"], event["signal"], event["leg_id"], event["provider_call_id"]) == (
        "MISSED",
        "machine",
        LEG,
        PARENT,
    )
    assert (event["caller"], event["called"], event["occurred_at"]) == (CALLER, PRACTICE_NUMBER, 9)
    assert event["provider_status"] == f"leg-{answered_by}"


@pytest.mark.parametrize("answered_by", ["human", "unknown", ""])
def test_a_person_or_no_verdict_produces_nothing(answered_by):
    assert twilio.amd_events(wh.twilio_amd(LEG, answered_by), CORR, 9) == []


def test_machine_answers_are_the_documented_set():
    assert twilio.MACHINE_ANSWERS == {
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
    }


# ---------------------------------------------------------------- voicemail fallback
def test_the_recorded_voicemail_is_a_voicemail():
    [event] = twilio.voicemail_event(wh.twilio_recorded(PARENT, CALLER, PRACTICE_NUMBER, 31), "maple", 4)
    assert (event["event_id"], event["outcome"], event["duration_s"]) == (f"twilio:{PARENT}:voicemail", "VOICEMAIL", 31)
    assert event["signal"] == "parent"
    assert event["recording_url"].endswith("/RE" + PARENT[2:])
    params = wh.twilio_recorded(PARENT, CALLER, PRACTICE_NUMBER)
    params.pop("RecordingUrl")
    assert twilio.voicemail_event(params, "maple", 4) == []


# ---------------------------------------------------------------- correlation through the URL
def test_correlation_round_trips_through_the_query():
    from urllib.parse import parse_qsl

    query = dict(parse_qsl(CORR.query()))
    assert query == {"practice": "maple", "call": PARENT, "caller": CALLER, "called": PRACTICE_NUMBER}
    assert twilio.Correlation.from_query(query, "maple") == CORR
    with pytest.raises(twilio.PayloadError, match="caller"):
        twilio.Correlation.from_query(query | {"caller": "anonymous"}, "maple")
    with pytest.raises(twilio.PayloadError, match="call"):
        twilio.Correlation.from_query({k: v for k, v in query.items() if k != "call"}, "maple")


# ---------------------------------------------------------------- the ready-made flow's TwiML
FLOW = CallFlow(front_desk=[DESK, CELL], ring_seconds=25, voicemail_greeting="Maple here, leave a message.")


def _xml(twiml: str) -> ET.Element:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return root


def test_incoming_twiml_rings_every_front_desk_phone_with_callbacks_pointed_at_ringback():
    root = _xml(call_flow.incoming_twiml(FLOW, BASE + "/", "maple", CORR))
    [dial] = list(root)
    assert dial.tag == "Dial"
    query = CORR.query()
    assert dial.attrib == {
        "action": f"{BASE}/webhooks/twilio/voice/dial?{query}",
        "method": "POST",
        "timeout": "25",
        "answerOnBridge": "true",
    }
    numbers = list(dial)
    assert [n.text for n in numbers] == [DESK, CELL]
    for number in numbers:
        assert number.tag == "Number"
        assert number.attrib == {
            "statusCallback": f"{BASE}/webhooks/twilio/voice/status?{query}",
            "statusCallbackEvent": "answered completed",
            "statusCallbackMethod": "POST",
            "machineDetection": "Enable",
            "amdStatusCallback": f"{BASE}/webhooks/twilio/voice/amd?{query}",
            "amdStatusCallbackMethod": "POST",
        }


def test_incoming_twiml_without_machine_detection_or_without_a_caller_number():
    quiet = FLOW.model_copy(update={"machine_detection": False})
    [number, _] = list(_xml(call_flow.incoming_twiml(quiet, BASE, "maple", CORR))[0])
    assert "machineDetection" not in number.attrib and "amdStatusCallback" not in number.attrib
    assert number.attrib["statusCallbackEvent"] == "answered completed"
    # A withheld caller: the phones still ring; no leg callbacks (nothing could key them).
    [dial] = list(_xml(call_flow.incoming_twiml(FLOW, BASE, "maple", None)))
    assert dial.attrib["action"] == f"{BASE}/webhooks/twilio/voice/dial?practice=maple"
    assert all(n.attrib == {} for n in dial)


def test_after_the_dial_nobody_answered_the_caller_reaches_the_voicemail():
    root = _xml(call_flow.after_dial_twiml(FLOW, BASE, CORR.query(), answered=False))
    say, record = list(root)
    assert (say.tag, say.text) == ("Say", "Maple here, leave a message.")
    assert record.tag == "Record"
    assert record.attrib == {
        "action": f"{BASE}/webhooks/twilio/voice/voicemail?{CORR.query()}",
        "method": "POST",
        "maxLength": "120",
        "playBeep": "true",
        "transcribe": "true",
        "transcribeCallback": f"{BASE}/webhooks/twilio/voice/transcription?{CORR.query()}",
    }


def test_after_an_answered_dial_or_without_a_call_flow_the_call_ends():
    for twiml in (
        call_flow.after_dial_twiml(FLOW, BASE, CORR.query(), answered=True),
        call_flow.after_dial_twiml(None, BASE, CORR.query(), answered=False),
        call_flow.hangup_twiml(),
    ):
        assert [e.tag for e in _xml(twiml)] == ["Hangup"]


def test_every_path_the_flow_points_twilio_at_is_served():
    for path in (
        call_flow.VOICE_INCOMING,
        call_flow.VOICE_STATUS,
        call_flow.VOICE_DIAL,
        call_flow.VOICE_AMD,
        call_flow.VOICE_VOICEMAIL,
        call_flow.VOICE_TRANSCRIPTION,
    ):
        assert path in WEBHOOKS
    assert wh.TWILIO_VOICE_DIAL == call_flow.VOICE_DIAL and wh.TWILIO_VOICE_AMD == call_flow.VOICE_AMD


# ---------------------------------------------------------------- call_flow in the practices file
def _practice(call_flow_entry: dict) -> dict:
    return {
        "id": "maple",
        "name": "Maple",
        "time_zone": "America/Chicago",
        "phone_numbers": [PRACTICE_NUMBER],
        "sms_from": PRACTICE_NUMBER,
        "booking_link": "https://book.example.org/maple",
        "call_flow": call_flow_entry,
    }


def test_call_flow_is_read_with_defaults_and_numbers_in_e164():
    [p] = parse_practices({"practices": [_practice({"front_desk": ["(312) 555-0181"]})]}).practices
    assert p.call_flow is not None
    assert (p.call_flow.front_desk, p.call_flow.ring_seconds, p.call_flow.machine_detection) == ([DESK], 20, True)
    # a practice without it is as before
    entry = _practice({})
    entry.pop("call_flow")
    assert parse_practices({"practices": [entry]}).practices[0].call_flow is None


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"front_desk": [DESK, "12"]}, "practices.0.call_flow.front_desk.1: Value error, not a possible phone number"),
        ({"front_desk": [DESK], "ring_seconds": 4}, "practices.0.call_flow.ring_seconds: Input should be greater"),
        ({"front_desk": [DESK], "ring_seconds": 121}, "practices.0.call_flow.ring_seconds: Input should be less"),
        ({"front_desk": []}, "practices.0.call_flow.front_desk: List should have at least 1 item"),
        ({"front_desk": [DESK] * 11}, "practices.0.call_flow.front_desk: List should have at most 10 items"),
        ({"front_desk": [PRACTICE_NUMBER]}, "call_flow.front_desk: +13125550100 is one of the practice's own"),
        ({"front_desk": [DESK], "ring": 20}, "practices.0.call_flow.ring: Extra inputs are not permitted"),
        ({"front_desk": [DESK], "voicemail_greeting": ""}, "practices.0.call_flow.voicemail_greeting"),
    ],
)
def test_a_bad_call_flow_is_refused_with_its_field_path(entry, message):
    with pytest.raises(ConfigError) as err:
        parse_practices({"practices": [_practice(entry)]})
    assert message in str(err.value)
