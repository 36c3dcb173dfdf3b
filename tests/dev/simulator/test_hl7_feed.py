"""The demo's EHR as HL7 v2 (`ringback.dev.simulator.hl7_feed`): every Patient and
Appointment of a planned day, sent as the demo sends it, is read by the HL7 feed's mapping
(`sources/ehr/hl7/messages.py`) as exactly the facts the FHIR mapping reads from the
resource, so the records on the topics are the same whichever path carries them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import pytest

from ringback.dev.simulator import plan as sim
from ringback.dev.simulator import render
from ringback.dev.simulator.hl7_feed import TO_HL7, Hl7Writer, ack_code, hl7_time, pid_segment
from ringback.sources.ehr.fhir import appointment_facts, patient_facts
from ringback.sources.ehr.hl7 import messages
from ringback.sources.ehr.hl7.mllp import ack
from tests.dev.simulator.test_plan import day_plan

NOW = 1_795_000_000.0


@pytest.fixture(scope="module")
def plan():
    return day_plan(seed=11, n=5)


def test_every_patient_and_appointment_maps_to_the_facts_the_fhir_path_reads(plan):
    writer = Hl7Writer()
    kinds: Counter = Counter()
    control_ids: list[str] = []
    for event in plan.preload + [e for e in plan.events if e.kind == sim.EHR]:
        zone = next(s.practice.time_zone for s in plan.sites if s.practice.id == event.practice_id)
        resources = [r for r in render.fhir_resources(event, NOW) if r["resourceType"] in TO_HL7]
        sent = writer.messages(event.practice_id, "US", resources)
        assert len(sent) == len(resources)
        for message, resource in zip(sent, resources, strict=True):
            kinds[message.kind] += 1
            control_ids.append(message.control_id)
            msg = messages.parse(message.text.encode())
            assert messages.header(msg).control_id == message.control_id
            mapped = messages.map_message(msg, "US", zone, 0)
            if resource["resourceType"] == "Patient":
                assert mapped.patient_authoritative and mapped.appointment is None
                assert asdict(mapped.patient) == asdict(patient_facts(resource, "US", 0))
                assert mapped.patient.phones and mapped.patient.updated_at > 0
            else:
                assert asdict(mapped.appointment) == asdict(appointment_facts(resource, 0))
                assert mapped.appointment.live and mapped.patient.patient_id == mapped.appointment.patient_id
    # The morning's patients are added (A28), bookings are S12, moved appointments S13.
    assert set(kinds) == {"ADT^A28", "SIU^S12", "SIU^S13"}, kinds
    reschedules = [e for e in plan.events if e.kind == sim.EHR and e.resources[0]["resourceType"] == "Appointment"]
    assert kinds["SIU^S13"] == len(reschedules) > 0
    assert len(control_ids) == len(set(control_ids)) == sum(kinds.values())  # every message its own MSH-10


def test_the_preferred_language_goes_in_pid_15_as_iso_639_2():
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"use": "official", "family": "Diaz", "given": ["Rosa", "Maria"]}],
        "telecom": [
            {"system": "phone", "value": "(773) 555-0101", "use": "mobile"},
            {"system": "phone", "value": "+44 20 7946 0958", "use": "home"},
            {"system": "email", "value": "rosa@example.org"},
        ],
        "communication": [{"language": {"coding": [{"code": "es-US", "display": "Spanish"}]}, "preferred": True}],
    }
    pid = pid_segment(patient, "maple", "US")
    fields = pid.split("|")
    assert fields[3] == "p1^^^maple^MR"
    assert fields[5] == "Diaz^Rosa^Maria^^^^L"
    assert fields[13] == "^PRN^CP^^1^773^5550101~^PRN^CP^^^^^^^^^+442079460958"
    assert fields[15] == "spa^Spanish^ISO6392"
    facts = messages.patient_facts(
        messages.parse(f"MSH|^~\\&|a|b|c|d|||ADT^A28|1|P|2.5.1\r{pid}".encode()), "US", "UTC", 0
    )
    assert (facts.language, facts.phones, facts.display_name) == (
        "es",
        ["+17735550101", "+442079460958"],
        "Rosa Maria Diaz",
    )


def test_an_appointment_of_a_patient_never_sent_is_refused():
    appointment = {
        "resourceType": "Appointment",
        "id": "a1",
        "status": "booked",
        "participant": [{"actor": {"reference": "Patient/unknown"}}],
        "start": "2026-11-24T10:00:00+00:00",
        "end": "2026-11-24T10:20:00+00:00",
        "meta": {"lastUpdated": "2026-11-24T08:00:00.000Z"},
    }
    with pytest.raises(ValueError, match="patient was not sent before"):
        Hl7Writer().messages("maple", "US", [appointment])


def test_times_keep_milliseconds_and_acks_are_read():
    assert hl7_time(1_795_000_000_123) == "20261118110640.123+0000"
    assert messages.dtm_ms(hl7_time(1_795_000_000_123), "America/Chicago") == 1_795_000_000_123
    msg = messages.parse(b"MSH|^~\\&|DEMOEHR|maple|RINGBACK|maple|20261124||SIU^S12^SIU_S12|DEMO1|P|2.5.1")
    assert ack_code(ack(msg, "AA")) == ("AA", "DEMO1", "")
    assert ack_code(ack(msg, "AE", "SCH-2 / SCH-1 (appointment id) is empty"))[::2] == (
        "AE",
        "SCH-2 / SCH-1 (appointment id) is empty",
    )
