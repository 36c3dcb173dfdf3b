"""FHIR R4 → patient / appointment / flag records: mapping of the HL7 examples and
Synthea data, and the projector that keys records by the patient's current phones and
turns removals into tombstones."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ringback.kafka import topics
from ringback.schemas import codec
from ringback.sources.ehr import fhir
from ringback.sources.ehr.publisher import EhrProjector, Op, PatientFacts, _patient_base
from tests.conftest import REPO

VENDOR = REPO / "tests" / "vendor" / "fhir"
NOW = 1_790_000_000_000


def hl7(name: str) -> dict:
    return json.loads((VENDOR / f"hl7-r4-{name}.json").read_text())


def synthea_patients() -> list[dict]:
    return [json.loads(line) for line in (VENDOR / "synthea_Patient.000.ndjson").read_text().splitlines() if line]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# ---------------------------------------------------------------------------------- Patient
def test_hl7_patient_example_has_two_current_phones_and_an_old_one_skipped():
    facts = fhir.patient_facts(hl7("Patient-example"), "AU", NOW)
    # telecom: an entry without system, work (03) 5555 6473, mobile (03) 3410 5613, old (03) 5555 8834
    assert facts.phones == ["+61355556473", "+61334105613"]
    assert facts.rejected == []
    assert facts.patient_id == "example" and facts.active and not facts.deceased
    assert facts.display_name == "Peter James Chalmers"
    assert facts.updated_at == NOW  # the example has no meta.lastUpdated


def test_hl7_patient_without_phone():
    facts = fhir.patient_facts(hl7("Patient-pat1"), "US", NOW)
    assert facts.phones == [] and facts.rejected == []


def test_synthea_patients_us_numbers_and_deceased():
    facts = [fhir.patient_facts(p, "US", NOW) for p in synthea_patients()]
    assert len(facts) == 13
    assert all(len(f.phones) == 1 and f.phones[0].startswith("+1555") for f in facts)
    assert {f.phones[0] for f in facts if f.patient_id == "129c6ac7-8d06-89de-ad63-0204a93e76c3"} == {"+15558107203"}
    assert sum(f.deceased for f in facts) == 3  # deceasedDateTime
    assert all(f.active for f in facts)  # `active` absent


def test_synthea_patients_prefer_english():
    # Synthea writes communication[].language.coding[] with system urn:ietf:bcp:47 and "en-US".
    assert {fhir.patient_facts(p, "US", NOW).language for p in synthea_patients()} == {"en"}


def _spoken(*entries: dict) -> dict:
    return {"resourceType": "Patient", "id": "p1", "communication": list(entries)}


def _lang(*codes: str, preferred: bool | None = None) -> dict:
    entry: dict = {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": c} for c in codes]}}
    if preferred is not None:
        entry["preferred"] = preferred
    return entry


@pytest.mark.parametrize(
    "resource, language",
    [
        (_spoken(_lang("en-US"), _lang("es-MX", preferred=True)), "es"),  # the preferred entry
        (_spoken(_lang("es"), _lang("en")), "es"),  # none preferred: the first
        (_spoken(_lang("vi", preferred=False), _lang("en", preferred=False)), "vi"),
        (_spoken({"language": {"text": "Spanish"}, "preferred": True}), None),  # no coding: unknown
        (_spoken(_lang("", "ES"), _lang("en")), "es"),  # the first coding that is a language tag
        (_spoken(), None),
        ({"resourceType": "Patient", "id": "p1"}, None),
    ],
)
def test_the_preferred_language_from_patient_communication(resource, language):
    assert fhir.patient_facts(resource, "US", NOW).language == language


def test_the_language_is_on_the_patient_record_and_survives_a_state_rebuild():
    proj = EhrProjector(P)
    facts = PatientFacts("a", True, ["+61355556473"], display_name="name of a", updated_at=1, language="es")
    (op,) = proj.patient(facts)
    assert op.value is not None and op.value["language"] == "es"
    assert codec.decode("patient", codec.encode("patient", op.value))["language"] == "es"
    old_state_record = {k: v for k, v in op.value.items() if k != "language"}  # a state file from before
    assert _patient_base(old_state_record)["language"] is None and _patient_base(op.value)["language"] == "es"


def test_invalid_phones_are_rejected_with_a_reason_that_does_not_echo_them():
    resource = {
        "resourceType": "Patient",
        "id": "bad",
        "telecom": [
            {"system": "phone", "value": "12"},
            {"system": "phone", "value": "ask at reception"},
            {"system": "phone", "value": "555-0199"},  # no area code
            {"system": "phone"},
            {"system": "email", "value": "a@example.org"},
            {"system": "sms", "value": "(415) 555-0123"},
            {"system": "phone", "value": "+1 415 555 0123", "use": "mobile"},  # the same number again
        ],
    }
    facts = fhir.patient_facts(resource, "US", NOW)
    assert facts.phones == ["+14155550123"]
    assert facts.rejected == [
        "Patient/bad telecom[0]: too short",
        "Patient/bad telecom[1]: not a phone number (no digits that form a number)",
        "Patient/bad telecom[2]: local number without area code",
        "Patient/bad telecom[3]: phone without a value",
    ]
    assert not any("555" in r or "reception" in r for r in facts.rejected)


def test_inactive_and_deceased_flags_and_last_updated():
    facts = fhir.patient_facts(
        {
            "resourceType": "Patient",
            "id": "p",
            "active": False,
            "deceasedBoolean": True,
            "meta": {"lastUpdated": "2026-01-05T10:00:01.250+00:00"},
            "generalPractitioner": [{"reference": "Practitioner/dr-1"}],
        },
        "US",
        NOW,
    )
    assert not facts.active and facts.deceased
    assert facts.updated_at == ms("2026-01-05T10:00:01.250+00:00")
    assert facts.assigned_provider == "Practitioner/dr-1"


# ---------------------------------------------------------------------------------- Appointment
def test_hl7_appointments():
    booked = fhir.appointment_facts(hl7("Appointment-example"), NOW)
    assert (booked.appointment_id, booked.patient_id, booked.status, booked.live) == (
        "example",
        "example",
        "booked",
        True,
    )
    assert booked.start == ms("2013-12-10T09:00:00+00:00")
    two = fhir.appointment_facts(hl7("Appointment-2docs"), NOW)
    assert two.patient_id == "example" and two.live
    proposed = fhir.appointment_facts(hl7("Appointment-examplereq"), NOW)
    assert proposed.start is None and not proposed.live  # proposed, no start yet


@pytest.mark.parametrize("status", ["cancelled", "noshow", "entered-in-error"])
def test_cancelled_appointments_are_not_live(status):
    resource = {**hl7("Appointment-example"), "status": status}
    assert not fhir.appointment_facts(resource, NOW).live


def test_references_in_all_their_forms():
    assert fhir.ref_id("Patient/123", "Patient") == "123"
    assert fhir.ref_id("https://ehr.example.org/fhir/Patient/123/_history/4", "Patient") == "123"
    assert fhir.ref_id("Practitioner/9", "Patient") is None
    assert fhir.ref_id(None, "Patient") is None


def test_a_bad_start_is_a_resource_error():
    with pytest.raises(fhir.ResourceError, match="Appointment/example: start"):
        fhir.appointment_facts({**hl7("Appointment-example"), "start": "next tuesday"}, NOW)


# ---------------------------------------------------------------------------------- Flag
def test_hl7_flags():
    inactive = fhir.flag_facts(hl7("Flag-example"), NOW, NOW)
    assert inactive.status == "inactive" and not inactive.live
    assert inactive.code == "bigdog" and inactive.patient_id == "example" and not inactive.callback_requested
    encounter = fhir.flag_facts(hl7("Flag-example-encounter"), NOW, NOW)
    assert encounter.live and encounter.code == "l3" and encounter.display == "Follow Level 3 Protocol"
    assert encounter.priority is None


def callback_flag(**over) -> dict:
    flag = {
        "resourceType": "Flag",
        "id": "cb-1",
        "status": "active",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/flag-priority",
                            "code": "PH",
                            "display": "High priority",
                        }
                    ]
                },
            }
        ],
        "code": {
            "coding": [{"system": "http://example.org/local", "code": "callback-requested"}],
            "text": "Callback requested by the after-hours nurse line",
        },
        "subject": {"reference": "Patient/example"},
    }
    flag.update(over)
    return flag


def test_flag_priority_extension_and_callback_requested():
    facts = fhir.flag_facts(callback_flag(), NOW, NOW)
    assert facts.priority == "PH" and facts.callback_requested and facts.live
    assert facts.code == "callback-requested"
    assert facts.display == "Callback requested by the after-hours nurse line"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Patient requests a call back about refill", True),
        ("CALL-BACK REQUESTED", True),
        ("No callbacks after 6pm", False),
        ("Refill request", False),
    ],
)
def test_callback_requested_needs_both_words(text, expected):
    facts = fhir.flag_facts(callback_flag(code={"text": text}), NOW, NOW)
    assert facts.callback_requested is expected


def test_a_flag_whose_period_ended_is_not_live():
    facts = fhir.flag_facts(callback_flag(period={"start": "2026-01-01", "end": "2026-01-02"}), NOW, NOW)
    assert not facts.live


def test_deletions_in_bulk_and_history_bundles():
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": "Patient/123"}},
            {"fullUrl": "https://x/fhir/Flag/f1", "response": {"status": "410 Gone"}},
            {"resource": {"resourceType": "Patient", "id": "9"}, "request": {"method": "PUT", "url": "Patient/9"}},
            {"request": {"method": "DELETE", "url": "Observation/1"}},
        ],
    }
    assert fhir.deletions_in_bundle(bundle) == [("Patient", "123"), ("Flag", "f1")]


# ---------------------------------------------------------------------------------- projector
P = "harbour-gp"


def view(ops: list[Op]) -> dict[tuple[str, bytes], dict | None]:
    """The compacted view the ops leave (last value per key)."""
    out: dict[tuple[str, bytes], dict | None] = {}
    for op in ops:
        out[(op.spec.suffix, op.key)] = op.value
        if op.value is not None:
            codec.encode(op.schema, op.value)  # every record is valid
    return out


def patient(pid, phones, active=True, deceased=False) -> PatientFacts:
    return PatientFacts(pid, active, phones, display_name=f"name of {pid}", deceased=deceased, updated_at=1)


def appointment(aid, pid, status="booked", start=2):
    return fhir.appointment_facts(
        {
            "resourceType": "Appointment",
            "id": aid,
            "status": status,
            **({"start": "2026-02-01T09:00:00Z"} if start else {}),
            "participant": [{"actor": {"reference": f"Patient/{pid}"}}],
        },
        5,
    )


def test_patient_records_one_per_phone_keyed_by_practice_and_phone():
    proj = EhrProjector(P)
    ops = proj.patient(patient("a", ["+61355556473", "+61334105613"]))
    assert view(ops) == {
        ("patients", b"harbour-gp|+61355556473"): {
            "practice_id": P,
            "phone": "+61355556473",
            "patient_id": "a",
            "display_name": "name of a",
            "deceased": False,
            "assigned_provider": None,
            "updated_at": 1,
            "language": None,
        },
        ("patients", b"harbour-gp|+61334105613"): {
            "practice_id": P,
            "phone": "+61334105613",
            "patient_id": "a",
            "display_name": "name of a",
            "deceased": False,
            "assigned_provider": None,
            "updated_at": 1,
            "language": None,
        },
    }
    assert all(op.key == topics.join_key(P, op.phone) for op in ops)


def test_a_phone_that_leaves_the_patient_is_tombstoned_and_inactive_tombstones_all():
    proj = EhrProjector(P)
    proj.patient(patient("a", ["+61355556473", "+61334105613"]))
    changed = view(proj.patient(patient("a", ["+61355556473"])))
    assert changed[("patients", b"harbour-gp|+61334105613")] is None
    assert changed[("patients", b"harbour-gp|+61355556473")]["patient_id"] == "a"
    gone = view(proj.patient(patient("a", ["+61355556473"], active=False)))
    assert gone == {("patients", b"harbour-gp|+61355556473"): None}


def test_a_shared_phone_goes_to_the_living_patient_and_survives_one_leaving():
    proj = EhrProjector(P)
    proj.patient(patient("b-child", ["+14155550100"]))
    v = view(proj.patient(patient("a-grandparent", ["+14155550100"], deceased=True)))
    assert v[("patients", b"harbour-gp|+14155550100")]["patient_id"] == "b-child"  # living first
    v = view(proj.patient(patient("b-child", ["+14155550100"], active=False)))
    assert v[("patients", b"harbour-gp|+14155550100")]["patient_id"] == "a-grandparent"  # not a tombstone
    v = view(proj.patient_deleted("a-grandparent"))
    assert v[("patients", b"harbour-gp|+14155550100")] is None


def test_appointments_follow_their_patient_phones():
    proj = EhrProjector(P)
    proj.patient(patient("a", ["+61355556473", "+61334105613"]))
    v = view(proj.appointment(appointment("ap1", "a")))
    assert set(v) == {
        ("appointments", b"harbour-gp|+61355556473|ap1"),
        ("appointments", b"harbour-gp|+61334105613|ap1"),
    }
    assert v[("appointments", b"harbour-gp|+61355556473|ap1")]["phone"] == "+61355556473"
    ops = proj.appointment(appointment("ap1", "a"))
    assert {op.phone for op in ops} == {"+61355556473", "+61334105613"}  # partition by the phone's join key
    # The patient drops a phone: the appointment's key under it is tombstoned.
    v = view(proj.patient(patient("a", ["+61355556473"])))
    assert v[("appointments", b"harbour-gp|+61334105613|ap1")] is None
    assert v[("appointments", b"harbour-gp|+61355556473|ap1")]["appointment_id"] == "ap1"
    # Cancelled: tombstones.
    v = view(proj.appointment(appointment("ap1", "a", status="cancelled")))
    assert v == {("appointments", b"harbour-gp|+61355556473|ap1"): None}


def test_an_appointment_before_its_patient_waits_then_is_published():
    proj = EhrProjector(P)
    assert view(proj.appointment(appointment("ap1", "later"))) == {}
    assert proj.waiting_for_patient("appointments", "ap1")
    v = view(proj.patient(patient("later", ["+14155550111"])))
    assert v[("appointments", b"harbour-gp|+14155550111|ap1")]["patient_id"] == "later"
    assert not proj.waiting_for_patient("appointments", "ap1")


def test_deleted_appointment_and_flag_and_unknown_deletions():
    proj = EhrProjector(P)
    proj.patient(patient("a", ["+14155550111"]))
    proj.appointment(appointment("ap1", "a"))
    proj.flag(fhir.flag_facts(callback_flag(subject={"reference": "Patient/a"}), 1, 1))
    assert view(proj.deleted("Appointment", "ap1")) == {("appointments", b"harbour-gp|+14155550111|ap1"): None}
    assert view(proj.deleted("Flag", "cb-1")) == {("flags", b"harbour-gp|+14155550111|cb-1"): None}
    assert proj.deleted("Flag", "never-seen") == []
    assert "ap1" not in proj.ids("Appointment")


def test_inactive_flag_seen_first_tombstones_its_keys():
    proj = EhrProjector(P)
    proj.patient(patient("example", ["+61355556473"]))
    v = view(proj.flag(fhir.flag_facts(hl7("Flag-example"), 1, NOW)))
    assert v == {("flags", b"harbour-gp|+61355556473|example"): None}


def test_patient_deletion_tombstones_its_appointments_and_flags():
    proj = EhrProjector(P)
    proj.patient(patient("a", ["+14155550111"]))
    proj.appointment(appointment("ap1", "a"))
    proj.flag(fhir.flag_facts(callback_flag(subject={"reference": "Patient/a"}), 1, 1))
    v = view(proj.patient_deleted("a"))
    assert v == {
        ("patients", b"harbour-gp|+14155550111"): None,
        ("appointments", b"harbour-gp|+14155550111|ap1"): None,
        ("flags", b"harbour-gp|+14155550111|cb-1"): None,
    }


def test_state_round_trips_through_json():
    proj = EhrProjector(P)
    proj.patient(patient("a", ["+14155550111"]))
    proj.appointment(appointment("ap1", "a"))
    again = EhrProjector(P, json.loads(json.dumps(proj.state)))
    v = view(again.patient(patient("a", ["+14155550222"])))
    assert v[("patients", b"harbour-gp|+14155550111")] is None
    assert v[("appointments", b"harbour-gp|+14155550111|ap1")] is None
    assert v[("appointments", b"harbour-gp|+14155550222|ap1")]["phone"] == "+14155550222"
    with pytest.raises(ValueError):
        EhrProjector("other-practice", proj.state)


def test_instants():
    assert fhir.instant_ms("2026-01-05T10:00:00Z") == ms("2026-01-05T10:00:00+00:00")
    assert fhir.instant_ms("2026-01-05") == int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
    assert fhir.instant_ms(None) is None
    with pytest.raises(fhir.ResourceError):
        fhir.instant_ms("soon")
