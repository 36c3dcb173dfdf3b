"""Patient SMS in the caller's language (the EHR patient record's `language`), else the practice default."""

from __future__ import annotations

from ringback.domain import templates
from ringback.workflow.state import ehr_key
from tests.workflow.harness import DAY, HOUR, KNOWN, NEW_CALLER, PRACTICE_ID, Harness, hold, reschedule_harness

SPANISH_ACK = "Maple Family Practice: nuestro equipo médico le va a llamar en menos de 30 minutos."


def spanish_urgent(**kw) -> Harness:
    h = Harness(**kw)
    h.patient(KNOWN, assigned_provider="email:dr.lee@maple.example.org", language="es")
    h.flag(KNOWN)
    return h


def test_a_known_patient_preferring_spanish_gets_the_spanish_acknowledgement():
    h = spanish_urgent()
    h.missed(KNOWN)
    h.at(hold())
    ack = h.action("ack_sms")
    assert ack["body"] == SPANISH_ACK + " Responda STOP para darse de baja."
    assert ack["params"]["language"] == "es" and ack["params"]["template"] == "urgent_ack"
    # staff text stays in the staff's language
    assert h.action("clinical_task")["body"].startswith("Urgent clinical callback")


def test_a_known_patient_preferring_spanish_gets_the_spanish_reschedule_link():
    h = Harness()
    h.patient(KNOWN, language="es")
    h.appointment(KNOWN, "a1", start=h.now + DAY)
    h.voicemail(KNOWN, "Necesito cambiar mi cita, I need to reschedule")
    h.at(hold())
    sms = h.action("reschedule_sms")
    assert sms["body"].startswith("Maple Family Practice: para cambiar su cita, use https://book.example.org/maple/")
    assert sms["params"]["language"] == "es"


def test_a_language_without_a_text_gets_the_practice_default():
    h = reschedule_harness(DAY)
    h.patient(KNOWN, language="vi")  # no Vietnamese texts: the practice default (English)
    h.voicemail(KNOWN, "I need to reschedule")
    h.at(hold())
    sms = h.action("reschedule_sms")
    assert sms["body"] == (
        "Maple Family Practice: sorry we missed your call. To reschedule, use "
        "https://book.example.org/maple/reschedule or reply here. Reply STOP to opt out."
    )
    assert sms["params"]["language"] == "en"


def test_a_practice_text_for_another_language_is_used_for_its_patients():
    vietnamese = "{practice_name}: de doi lich hen, dung {reschedule_link}. Tra loi STOP de huy."
    h = reschedule_harness(DAY, templates_by_language={"vi": {"reschedule_link": vietnamese}})
    h.patient(KNOWN, language="vi")
    h.voicemail(KNOWN, "I need to reschedule")
    h.at(hold())
    assert h.action("reschedule_sms")["body"].startswith("Maple Family Practice: de doi lich hen, dung https://")
    assert h.action("reschedule_sms")["params"]["language"] == "vi"


def test_a_new_caller_gets_the_practice_default_language_first_and_second_sms():
    h = Harness(default_language="es")
    h.missed(NEW_CALLER)
    h.at(hold())
    first = h.action("first_sms")
    assert first["body"].startswith("Maple Family Practice: disculpe la llamada perdida.")
    assert first["params"]["language"] == "es"
    h.at(2 * HOUR)
    assert h.action("second_sms")["body"].startswith("Maple Family Practice: con gusto le ayudamos.")
    english = Harness()
    english.missed(NEW_CALLER)
    english.at(hold())
    assert english.action("first_sms")["body"].startswith("Hi, this is Maple Family Practice.")


def test_a_spanish_default_practice_writes_english_to_a_patient_preferring_english():
    h = Harness(default_language="es")
    h.patient(KNOWN, assigned_provider="email:dr.lee@maple.example.org", language="en")
    h.flag(KNOWN)
    h.missed(KNOWN)
    h.at(hold())
    assert h.action("ack_sms")["body"].startswith("Maple Family Practice: your call is flagged")


def test_the_opt_out_confirmation_is_in_the_patients_language():
    h = spanish_urgent()
    h.missed(KNOWN)
    h.at(hold())
    h.sms(KNOWN, "please stop texting me")
    confirmation = h.action("optout_confirmation")
    assert confirmation["body"] == templates.SHIPPED["es"]["optout_confirmation"].format(
        practice_name="Maple Family Practice"
    )
    assert confirmation["params"]["language"] == "es"


def test_a_patient_record_stored_before_languages_existed_gets_the_default():
    h = spanish_urgent()
    del h.table[ehr_key(PRACTICE_ID, KNOWN)]["patient"]["language"]  # state written by an older worker
    h.missed(KNOWN)
    h.at(hold())
    assert h.action("ack_sms")["params"]["language"] == "en"


def test_an_updated_patient_record_changes_the_language_of_the_next_sms():
    h = spanish_urgent()
    h.patient(KNOWN, assigned_provider="email:dr.lee@maple.example.org", language=None)
    h.missed(KNOWN)
    h.at(hold())
    assert h.action("ack_sms")["body"].startswith("Maple Family Practice: your call is flagged")
