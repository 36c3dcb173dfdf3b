"""HL7 v2 SIU / ADT → patient and appointment facts (pure), from the samples in tests/vendor/hl7/."""

from __future__ import annotations

from datetime import datetime

import hl7
import pytest

from ringback.domain.templates import primary_tag
from ringback.sources.ehr.hl7 import messages
from ringback.sources.ehr.hl7.messages import Unmappable, dtm_ms, map_message
from ringback.sources.ehr.hl7.mllp import ack, bare_ack
from tests.conftest import REPO

VENDOR = REPO / "tests" / "vendor" / "hl7"
ZONE = "America/Chicago"
PHONE = "+13125550142"


def sample(name: str) -> bytes:
    return (VENDOR / name).read_bytes().replace(b"\n", b"\r")


def mapped(name: str, region: str = "US", received_at: int = 0) -> messages.Mapped:
    return map_message(messages.parse(sample(name)), region, ZONE, received_at)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_s12_books_the_appointment_of_the_patient_in_pid():
    m = mapped("siu_s12.hl7")
    assert m.header.kind == "SIU^S12" and m.header.control_id == "SIU0001"
    assert m.patient is not None and not m.patient_authoritative
    assert (m.patient.patient_id, m.patient.phones) == ("E1001", [PHONE])
    a = m.appointment
    assert a is not None
    assert (a.appointment_id, a.patient_id, a.status, a.live) == ("A55001", "E1001", "booked", True)
    assert a.start == ms("2026-11-27T09:30:00-06:00")
    assert a.updated_at == ms("2026-11-23T09:00:00-06:00")  # MSH-7


def test_s13_moves_the_start():
    a = mapped("siu_s13.hl7").appointment
    assert a is not None and (a.status, a.live) == ("booked", True)
    assert a.start == ms("2026-12-01T11:00:00-06:00")


def test_s14_modified_keeps_the_booking():
    a = mapped("siu_s14.hl7").appointment
    assert a is not None and (a.appointment_id, a.status, a.live) == ("A55001", "booked", True)


@pytest.mark.parametrize(("name", "status"), [("siu_s15.hl7", "cancelled"), ("siu_s26.hl7", "noshow")])
def test_cancelled_and_no_show_are_not_live(name, status):
    a = mapped(name).appointment
    assert a is not None and (a.status, a.live) == (status, False)


def test_the_trigger_wins_over_the_filler_status_for_a_cancellation():
    text = sample("siu_s15.hl7").replace(b"|Cancelled", b"|Booked")
    a = map_message(messages.parse(text), "US", ZONE, 0).appointment
    assert a is not None and a.status == "cancelled"


def test_s16_discontinued_is_a_cancellation():
    text = sample("siu_s15.hl7").replace(b"SIU^S15", b"SIU^S16")
    a = map_message(messages.parse(text), "US", ZONE, 0).appointment
    assert a is not None and (a.status, a.live) == ("cancelled", False)


@pytest.mark.parametrize("trigger", ["S18", "S19", "S20", "S21", "S22"])
def test_resource_changes_keep_the_appointment_as_sch25_says(trigger):
    text = sample("siu_s14.hl7").replace(b"SIU^S14", f"SIU^{trigger}".encode()).replace(b"|Booked", b"|Pending")
    a = map_message(messages.parse(text), "US", ZONE, 0).appointment
    assert a is not None and (a.status, a.live) == ("pending", True)


def test_s17_deletes_the_appointment():
    m = mapped("siu_s17.hl7")
    assert m.deleted_appointment == "A55001" and m.appointment is None


def test_s23_blocked_slot_is_accepted_and_publishes_nothing():
    m = mapped("siu_s23.hl7")
    assert m.ignored and m.patient is None and m.appointment is None


def test_v23_start_without_offset_is_in_the_practice_zone_and_language_is_iso_639_2():
    m = map_message(messages.parse(sample("siu_s12_v23.hl7")), "US", "America/New_York", 0)
    assert m.appointment is not None and m.appointment.start == ms("2026-12-03T14:00:00-05:00")
    assert m.patient is not None and m.patient.phones == ["+16175550188"] and m.patient.language == "vi"


def test_a04_registers_the_patient_with_phones_name_language_provider():
    m = mapped("adt_a04.hl7")
    p = m.patient
    assert m.patient_authoritative and p is not None
    assert p.patient_id == "E1001"  # the MR identifier, not the SSN
    assert p.phones == ["+13125550142", "+13125550143", "+13125550144"]  # e-mail skipped, extension dropped
    assert p.display_name == "Lucia M Rivera"  # the legal name, not the maiden one
    assert p.language == "es"
    assert p.assigned_provider == "1234567890"
    assert not p.deceased and p.active


def test_a08_update_drops_the_fax_and_the_language():
    p = mapped("adt_a08.hl7").patient
    assert p is not None and p.phones == ["+13125550143"] and p.language is None


def test_a28_formatted_phone_and_a31_deceased():
    p28 = mapped("adt_a28.hl7").patient
    assert p28 is not None and p28.phones == ["+13125550150"] and p28.display_name == "Sean O'Neil"
    p31 = mapped("adt_a31.hl7").patient
    assert p31 is not None and p31.phones == ["+13125550151"] and p31.deceased and p31.language == "en"


def test_a_phone_that_does_not_parse_is_reported_without_the_number():
    text = sample("adt_a28.hl7").replace(b"(312) 555-0150", b"12")
    p = map_message(messages.parse(text), "US", ZONE, 0).patient
    assert p is not None and p.phones == [] and len(p.rejected) == 1
    assert p.rejected[0].startswith("PID-13[1]:") and "12" not in p.rejected[0].split(":", 1)[1]


def test_unsupported_trigger_and_version_are_ar():
    with pytest.raises(Unmappable) as exc:
        mapped("adt_a01_unsupported.hl7")
    assert exc.value.code == "AR"
    text = sample("siu_s12.hl7").replace(b"|P|2.5.1", b"|P|2.2")
    with pytest.raises(Unmappable) as exc:
        map_message(messages.parse(text), "US", ZONE, 0)
    assert exc.value.code == "AR" and "2.2" in exc.value.reason


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ((b"", b""), "appointment start"),  # the malformed sample itself
        ((b"E1001^^^MAPLE^MR", b""), "PID-3"),
        ((b"P77009^EPIC|A55009^EPIC", b"|"), "appointment id"),
    ],
)
def test_malformed_content_is_ae_without_phi(edit, reason):
    text = sample("siu_s12_malformed.hl7").replace(*edit) if edit[0] else sample("siu_s12_malformed.hl7")
    with pytest.raises(Unmappable) as exc:
        map_message(messages.parse(text), "US", ZONE, 0)
    assert exc.value.code == "AE"
    assert "Rivera" not in exc.value.reason and "555" not in exc.value.reason
    assert reason in exc.value.reason


@pytest.mark.parametrize(
    "raw",
    [b"", b"hello", b"PID|1||E1\r", sample("siu_s12.hl7").replace(b"|SIU0001|", b"||")],
)
def test_no_usable_msh_is_ae(raw):
    with pytest.raises(Unmappable) as exc:
        messages.header(messages.parse(raw))
    assert exc.value.code == "AE"


def test_a_booking_without_a_start_is_ae_a_cancellation_needs_none():
    no_start = b"\r".join(
        line for line in sample("siu_s12.hl7").split(b"\r") if not line.startswith((b"TQ1", b"AIS", b"AIP"))
    ).replace(b"^^30^20261127093000-0600^20261127100000-0600", b"")
    with pytest.raises(Unmappable) as exc:
        map_message(messages.parse(no_start), "US", ZONE, 0)
    assert exc.value.code == "AE"
    cancelled = no_start.replace(b"SIU^S12", b"SIU^S15")
    a = map_message(messages.parse(cancelled), "US", ZONE, 0).appointment
    assert a is not None and a.start is None and not a.live


def test_msh7_missing_falls_back_to_the_receive_time():
    text = sample("siu_s13.hl7").replace(b"|20261124140000-0600||SIU", b"|||SIU")
    a = map_message(messages.parse(text), "US", ZONE, 1234).appointment
    assert a is not None and a.updated_at == 1234


def test_dtm_precisions_and_offsets():
    assert dtm_ms("20261124", "UTC") == ms("2026-11-24T00:00:00+00:00")
    assert dtm_ms("202611241430", "America/Chicago") == ms("2026-11-24T14:30:00-06:00")
    assert dtm_ms("20261124143005.123+0530", "UTC") == ms("2026-11-24T14:30:05+05:30") + 123
    assert dtm_ms("20261124143005.1+0000", "UTC") == ms("2026-11-24T14:30:05+00:00") + 100
    assert dtm_ms("", "UTC") is None
    with pytest.raises(ValueError):
        dtm_ms("2026-11-24", "UTC")


@pytest.mark.parametrize(
    ("code", "tag"),
    [("es", "es"), ("SPA", "es"), ("es-MX", "es"), ("eng", "en"), ("fre", "fr"), ("E", None), ("", None)],
)
def test_pid15_language_codes(code, tag):
    assert primary_tag(code) == tag  # the reading the FHIR path uses too


def test_latin1_bytes_are_read():
    text = sample("adt_a28.hl7").replace(b"O'Neil", "Muñoz".encode("latin-1"))
    p = map_message(messages.parse(text), "US", ZONE, 0).patient
    assert p is not None and p.display_name == "Sean Muñoz"


def test_ack_answers_the_control_id_and_escapes_the_reason():
    msg = messages.parse(sample("siu_s13.hl7"))
    reply = hl7.parse(ack(msg, "AE", "bad | field").decode())
    assert str(reply.segment("MSH")(9)) == "ACK^S13^ACK"
    assert (reply["MSA.F1"], reply["MSA.F2"]) == ("AE", "SIU0002")
    assert reply.unescape(str(reply.segment("MSA")(3))) == "bad | field"
    assert (reply["MSH.F5"], reply["MSH.F6"]) == ("EPICCADENCE", "MAPLE")  # back to the sender
    bare = hl7.parse(bare_ack("AE", "not HL7 | at all").decode())
    assert (bare["MSA.F1"], bare["MSA.F2"]) == ("AE", "")
