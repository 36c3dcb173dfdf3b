"""CDR lines: parsing Master.csv lines, and mapping them to call events (or reasons to skip
or dead-letter them) for a practice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ringback.schemas import codec
from ringback.sources.cdr import records
from tests.sources.cdr.master_csv import CTX, DIRECTORY, PRACTICES, line


# ---------------------------------------------------------------------------------- parsing
def test_parses_a_standard_line_with_quoted_commas_and_doubled_quotes():
    raw = line(lastdata="SIP/201&SIP/202,30,tT", clid='"Roe, Jane" <4155550123>')
    assert b'"""Roe, Jane"" <4155550123>"' in raw  # as cdr_csv writes it
    rec = records.parse_line(raw)
    assert rec.lastdata == "SIP/201&SIP/202,30,tT"
    assert rec.clid == '"Roe, Jane" <4155550123>'
    assert rec.disposition == "NO ANSWER"
    assert rec.start == datetime(2026, 3, 2, 9, 15, 0)
    assert rec.answer is None
    assert rec.duration == 30 and rec.billsec == 0
    assert rec.uniqueid == "1772464500.17"


def test_sixteen_columns_without_uniqueid_and_extra_columns_are_read():
    assert records.parse_line(line(uniqueid=None)).uniqueid == ""
    assert records.parse_line(line(userfield=None)).userfield == ""
    assert records.parse_line(line(extra=("1772464500.17", "42"))).uniqueid == "1772464500.17"
    assert records.parse_line(line() + b"\r").uniqueid == "1772464500.17"  # CRLF files


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'"","4155550123","3125550100"', "3 columns"),
        (line(start="02/03/2026 09:15"), "start is not"),
        (line(start=""), "start is empty"),
        (line(answer="yesterday"), "answer is not"),
        (line(duration="thirty"), "duration is not an integer"),
        (line(billsec="-4"), "billsec is negative"),
        (line(disposition="RINGING"), "unknown disposition"),
        (line() + b',"' + b"x" * 5, "not CSV"),
        (line(extra=tuple("x" * 10)), "28 columns"),
    ],
)
def test_malformed_lines_say_why(raw, reason):
    with pytest.raises(records.MalformedLine, match=reason):
        records.parse_line(raw)


def test_malformed_reasons_never_echo_the_numbers():
    with pytest.raises(records.MalformedLine) as exc:
        records.parse_line(line(src="4155550123", duration="x4155550123"))
    assert "4155550123" not in str(exc.value)


@pytest.mark.parametrize(
    "disposition, lastapp, dstchannel, billsec, expected",
    [
        ("NO ANSWER", "Dial", "SIP/201-1", "0", ("MISSED", "NO_ANSWER")),
        ("BUSY", "Dial", "SIP/201-1", "0", ("MISSED", "BUSY")),
        ("FAILED", "Dial", "", "0", ("MISSED", "FAILED")),
        ("CONGESTION", "Dial", "", "0", ("MISSED", "CONGESTION")),
        ("ANSWERED", "VoiceMail", "", "25", ("VOICEMAIL", "VOICEMAIL")),
        ("ANSWERED", "VoiceMail", "SIP/201-1", "25", ("VOICEMAIL", "VOICEMAIL")),
        ("ANSWERED", "Dial", "SIP/201-1", "95", ("ANSWERED", "ANSWERED")),
        ("ANSWERED", "Dial", "SIP/201-1", "2", ("MISSED", "ANSWERED")),  # hung up on pickup
        ("ANSWERED", "Queue", "", "60", ("MISSED", "ABANDONED")),
        ("ANSWERED", "BackGround", "", "12", None),  # an IVR menu answered, nobody reached
        ("ANSWERED", "Playback", "", "5", None),
    ],
)
def test_outcome_of_a_call_leg(disposition, lastapp, dstchannel, billsec, expected):
    rec = records.parse_line(line(disposition=disposition, lastapp=lastapp, dstchannel=dstchannel, billsec=billsec))
    assert records.classify(rec) == expected


# ---------------------------------------------------------------------------------- mapping
def test_missed_inbound_call_becomes_a_call_event_keyed_by_practice_and_caller():
    mapped = records.map_line(line(), CTX, received_ms=1_772_464_600_000)
    assert mapped.kind == "event"
    assert mapped.key == b"maple-family|+14155550123"
    ev = mapped.record
    assert ev["event_id"] == "cdr:1772464500.17:NO_ANSWER"
    assert ev["provider"] == "cdr" and ev["event_type"] == "CALL" and ev["outcome"] == "MISSED"
    assert ev["caller"] == "+14155550123" and ev["called"] == "+13125550100"
    assert ev["direction"] == "INBOUND" and ev["provider_status"] == "NO ANSWER"
    assert ev["provider_call_id"] == "1772464500.17" and ev["duration_s"] == 30
    # 09:15 in Chicago on 2 March 2026 (CST, UTC-6) is 15:15 UTC.
    assert ev["occurred_at"] == int(datetime(2026, 3, 2, 15, 15, tzinfo=UTC).timestamp() * 1000)
    assert ev["received_at"] == 1_772_464_600_000
    codec.encode("call_event", ev)  # valid against the schema


def test_pbx_local_time_follows_daylight_saving():
    summer = records.map_line(line(start="2026-07-01 09:15:00"), CTX, 0).record
    assert summer["occurred_at"] == int(datetime(2026, 7, 1, 14, 15, tzinfo=UTC).timestamp() * 1000)
    utc_ctx = records.Context.of(PRACTICES[0], DIRECTORY, time_zone="UTC")
    assert records.map_line(line(start="2026-07-01 09:15:00"), utc_ctx, 0).record["occurred_at"] == int(
        datetime(2026, 7, 1, 9, 15, tzinfo=UTC).timestamp() * 1000
    )


def test_voicemail_and_answered_calls_are_ingested_too():
    vm = records.map_line(line(disposition="ANSWERED", lastapp="VoiceMail", lastdata="201@default,u"), CTX, 0)
    assert vm.record["outcome"] == "VOICEMAIL" and vm.record["event_id"].endswith(":VOICEMAIL")
    assert vm.record["provider_status"] == "ANSWERED/VoiceMail"
    answered = records.map_line(line(disposition="ANSWERED", billsec="80"), CTX, 0)
    assert answered.record["outcome"] == "ANSWERED" and answered.record["event_id"].endswith(":ANSWERED")


def test_called_number_is_the_dialled_did_or_else_the_practice_main_number():
    assert records.map_line(line(dst="+1 312 555 0101"), CTX, 0).record["called"] == "+13125550101"
    # FreePBX writes the extension or "s" as dst: the PBX belongs to the practice anyway.
    assert records.map_line(line(dst="201"), CTX, 0).record["called"] == "+13125550100"
    assert records.map_line(line(dst="s"), CTX, 0).record["practice_id"] == "maple-family"
    assert records.map_line(line(dst="8005550199"), CTX, 0).record["called"] == "+13125550100"


def test_a_did_of_another_practice_is_dead_lettered_not_misattributed():
    mapped = records.map_line(line(dst="6175550142"), CTX, 0)
    assert mapped.kind == "dead" and "lakeside-peds" in mapped.reason


def test_caller_comes_from_clid_when_src_is_empty():
    mapped = records.map_line(line(src="", clid='"Jane Roe" <+1 (415) 555-0199>'), CTX, 0)
    assert mapped.record["caller"] == "+14155550199"


@pytest.mark.parametrize(
    "over, reason",
    [
        ({"src": "201", "clid": '"Front desk" <201>'}, "no_external_caller"),  # extension to extension
        ({"src": "", "clid": "anonymous"}, "no_external_caller"),
        ({"src": "5550123", "clid": ""}, "no_external_caller"),  # 7 digits: no area code, cannot be texted
        ({"dcontext": "from-internal", "dst": "4155550999"}, "outbound_not_answered"),
        (
            {"dcontext": "outrt-1", "disposition": "ANSWERED", "billsec": "40", "dst": "201"},
            "outbound_not_to_an_outside_number",
        ),
        ({"src": "201", "clid": "", "dst": "4155550123", "dcontext": "custom-out"}, "outbound_not_answered"),
        ({"src": "3125550101"}, "caller_is_practice"),
        ({"disposition": "ANSWERED", "lastapp": "BackGround", "dstchannel": ""}, "answered_by_pbx"),
    ],
)
def test_lines_that_are_not_inbound_calls_from_a_reachable_number_are_skipped(over, reason):
    mapped = records.map_line(line(**over), CTX, 0)
    assert (mapped.kind, mapped.reason) == ("skip", reason)


@pytest.mark.parametrize(
    "over",
    [
        {"dcontext": "from-internal", "src": "201", "clid": '"Front desk" <201>'},
        {"dcontext": "outrt-2", "src": "+13125550101"},  # the practice's outbound caller id
        {"dcontext": "macro-dialout-trunk", "src": "201", "clid": ""},
        {"dcontext": "custom-out", "src": "201", "clid": ""},  # an extension dialling out
    ],
)
def test_an_answered_outbound_call_is_the_practice_reaching_the_patient(over):
    mapped = records.map_line(line(dst="14155550188", disposition="ANSWERED", billsec="64", **over), CTX, 0)
    ev = mapped.record
    assert (ev["direction"], ev["outcome"], ev["caller"]) == ("OUTBOUND", "ANSWERED", "+14155550188")
    assert ev["called"] == ("+13125550101" if over["src"] == "+13125550101" else "+13125550100")
    assert mapped.key == b"maple-family|+14155550188" and ev["event_id"] == "cdr:1772464500.17:ANSWERED"
    short = records.map_line(line(dst="14155550188", disposition="ANSWERED", billsec="3", **over), CTX, 0)
    assert (short.kind, short.reason) == ("skip", "outbound_not_answered")


def test_without_uniqueid_the_event_id_is_a_stable_hash_of_the_line():
    raw = line(uniqueid=None)
    first = records.map_line(raw, CTX, 1).record["event_id"]
    again = records.map_line(raw, CTX, 2).record["event_id"]
    assert first == again == records.map_line(raw + b"\r", CTX, 3).record["event_id"]
    assert first.startswith("cdr:h") and first.endswith(":NO_ANSWER")
    assert first != records.map_line(line(uniqueid=None, start="2026-03-02 09:16:00"), CTX, 1).record["event_id"]


def test_blank_and_malformed_lines():
    assert records.map_line(b"", CTX, 0).kind == "skip"
    dead = records.map_line(b"this is not a cdr", CTX, 0)
    assert dead.kind == "dead" and "columns" in dead.reason
