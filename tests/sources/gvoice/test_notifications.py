"""Google Voice notification e-mails → notifications → call events (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ringback.schemas import codec
from ringback.sources.gvoice.notifications import Notification, Unreadable, call_events, read_notification
from tests.sources.gvoice.mail import notification, sample

MARCH_3_1402_PST = int(datetime(2026, 3, 3, 22, 2, 11, tzinfo=UTC).timestamp() * 1000)


def parsed(raw: bytes) -> Notification:
    note = read_notification(raw)
    assert isinstance(note, Notification), note
    return note


def read(name: str) -> Notification:
    note = read_notification(sample(name))
    assert isinstance(note, Notification), note
    return note


def test_missed_call_names_the_caller_and_the_time_of_the_date_header():
    note = read("missed-call.eml")
    assert note.kind == "missed_call"
    assert note.caller == "+14155550142"
    assert note.occurred_at_ms == MARCH_3_1402_PST
    assert note.text is None
    assert note.numbers == ()  # footer links' digits are not taken for numbers
    assert note.message_id == "<000000000000a1b2c3d40001@google.com>"


def test_voicemail_carries_its_transcript_without_the_layout_around_it():
    note = read("voicemail.eml")
    assert note.kind == "voicemail"
    assert note.caller == "+14155550177"
    assert note.text == (
        "Hi, this is a message for the front desk. I need to reschedule my cleaning "
        "appointment on Thursday, please call me back. Thanks."
    )


def test_text_message_reads_the_sender_and_the_google_voice_number_from_the_reply_address():
    note = read("text-message.eml")
    assert note.kind == "text"
    assert note.caller == "+14155550199"
    assert note.text == "Can I get an appointment next week? I'm a new patient."
    assert note.numbers == ("+14155550100",)


def test_a_contact_named_in_the_subject_is_found_by_the_number_in_the_html_body():
    note = read("missed-call-contact.eml")
    assert (note.kind, note.caller) == ("missed_call", "+14155550163")


@pytest.mark.parametrize(
    "raw, reason",
    [
        (sample("not-a-notification.eml"), "subject is not"),
        (sample("missed-call.eml").replace(b"voice-noreply@google.com", b"someone@example.org"), "not sent by"),
        (sample("missed-call.eml").replace(b"Date: Tue, 03 Mar 2026 14:02:11 -0800", b"Date: soon"), "Date header"),
        (
            sample("missed-call-contact.eml").replace(b"(415) 555-0163", b"unknown"),
            "no caller number",
        ),
        (b"\xff\xfe\x00garbage", "subject is not"),
        (b"", "subject is not"),
    ],
)
def test_what_cannot_be_read_says_why_without_echoing_numbers(raw, reason):
    got = read_notification(raw)
    assert isinstance(got, Unreadable)
    assert reason in got.reason
    assert "555" not in got.reason


def test_a_missed_call_becomes_one_missed_call_event_keyed_by_the_message():
    events = call_events(read("missed-call.eml"), "birch-dental", "+14155550100", 1)
    assert len(events) == 1
    event = events[0]
    assert event["event_type"] == "CALL" and event["outcome"] == "MISSED" and event["direction"] == "INBOUND"
    assert event["provider"] == "google_voice"
    assert (event["caller"], event["called"], event["practice_id"]) == ("+14155550142", "+14155550100", "birch-dental")
    assert event["event_id"] == f"google_voice:{event['provider_call_id']}:missed"
    assert event["signal"] is None and event["leg_id"] is None  # the provider's verdict on the whole call
    codec.encode("call_event", event)  # valid against the schema


def test_a_voicemail_becomes_its_transcript_then_the_voicemail_call_with_one_call_id():
    transcription, call = call_events(read("voicemail.eml"), "birch-dental", "+14155550100", 1)
    assert transcription["event_type"] == "TRANSCRIPTION" and "reschedule" in transcription["transcript"]
    assert call["event_type"] == "CALL" and call["outcome"] == "VOICEMAIL"
    assert transcription["provider_call_id"] == call["provider_call_id"]
    for event in (transcription, call):
        codec.encode("call_event", event)


def test_a_voicemail_without_transcript_is_the_call_alone():
    raw = sample("voicemail.eml").replace(b"Hi, this is a message", b"Transcript not available. Hi")
    events = call_events(parsed(raw), "p", "+14155550100", 1)
    assert [e["event_type"] for e in events] == ["CALL"]


def test_a_text_becomes_an_sms_event_with_its_body():
    (event,) = call_events(read("text-message.eml"), "birch-dental", "+14155550100", 1)
    assert event["event_type"] == "SMS" and event["outcome"] is None
    assert event["sms_body"] == "Can I get an appointment next week? I'm a new patient."
    codec.encode("call_event", event)


def test_the_same_message_read_twice_gives_the_same_event_ids_and_another_message_others():
    raw, _ = notification("missed-call.eml")
    first = call_events(parsed(raw), "p", "+1", 1)
    again = call_events(parsed(raw), "p", "+1", 2)
    other, _ = notification("missed-call.eml")
    third = call_events(parsed(other), "p", "+1", 3)
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert first[0]["event_id"] != third[0]["event_id"]


def test_the_samples_rebuilt_for_another_caller_read_as_that_caller():
    raw, _ = notification("text-message.eml", caller="+13125550999")
    note = read_notification(raw)
    assert isinstance(note, Notification) and note.caller == "+13125550999"
