"""Staff texts (domain/staff_texts.py): one template per branch, each read as staff read it."""

from __future__ import annotations

import pytest

from ringback.domain import consent, staff_texts

APPT = "Wed 25 Nov 09:00 CST"
CAP = "frequency cap: 3 SMS in 24 h (cap 3)"
OPTED_OUT = consent.for_staff(consent.Refusal.OPTED_OUT)


def test_task_created_names_the_role_and_flags_urgent():
    assert staff_texts.task_created("admin_team", "NORMAL") == "A new task for the admin team is in the staff console."
    assert staff_texts.task_created("nurse", "HIGH") == "A new task for the nurse is in the staff console."
    assert (
        staff_texts.task_created("nurse", "URGENT")
        == "URGENT: a new urgent clinical callback task for the nurse. Open it now."
    )


def test_new_patient_sms_sent():
    assert staff_texts.new_patient() == (
        "A new patient's call was missed. The SMS with the booking link went out. "
        "Be ready to book them when they reply or call again."
    )


def test_new_patient_quiet_hours_says_when_the_sms_goes_not_that_it_went():
    text = staff_texts.new_patient(send_time="Wed 25 Nov 08:00 CST")
    assert text == (
        "A new patient's call was missed. It came in the quiet hours: the SMS with the booking link goes out "
        "at Wed 25 Nov 08:00 CST. Be ready to book them when they reply or call again."
    )


def test_new_patient_opted_out_asks_for_a_call_back_not_to_wait_for_a_reply():
    text = staff_texts.new_patient(blocked=OPTED_OUT)
    assert text == (
        "A new patient's call was missed. The SMS was not sent: the number opted out of texts. "
        "Call them back: the callback task is yours."
    )
    assert "reply" not in text


def test_new_patient_capped_gives_the_limit():
    assert staff_texts.new_patient(blocked=CAP) == (
        "A new patient's call was missed. The SMS was not sent: the number reached its SMS limit (3 SMS in 24 h). "
        "Call them back: the callback task is yours."
    )


@pytest.mark.parametrize("blocked", ["blocked number", "the patient record is marked deceased", "FCC profile: 167"])
def test_other_refusals_stay_in_the_console(blocked):
    text = staff_texts.new_patient(blocked=blocked)
    assert text == (
        "A new patient's call was missed. The SMS was not sent (the task says why). "
        "Call them back: the callback task is yours."
    )
    assert blocked not in text
    assert blocked not in staff_texts.reschedule(APPT, blocked=blocked)


def test_reschedule_link_sent():
    assert staff_texts.reschedule(APPT) == (
        "A patient asked by voicemail to reschedule their appointment on Wed 25 Nov 09:00 CST. "
        "The SMS with the reschedule link went out. Reschedule it if the patient does not do it with the link."
    )


def test_reschedule_link_in_the_quiet_hours():
    assert staff_texts.reschedule(APPT, send_time="Wed 25 Nov 08:00 CST") == (
        "A patient asked by voicemail to reschedule their appointment on Wed 25 Nov 09:00 CST. It came in the "
        "quiet hours: the SMS with the reschedule link goes out at Wed 25 Nov 08:00 CST. "
        "Reschedule it if the patient does not do it with the link."
    )


def test_reschedule_beyond_the_link_horizon_says_no_link_was_sent():
    text = staff_texts.reschedule(APPT, beyond_horizon_days=14)
    assert text == (
        "A patient asked by voicemail to reschedule their appointment on Wed 25 Nov 09:00 CST. "
        "The link was not sent: the appointment is more than 14 days away. "
        "Call the patient back to reschedule: the callback task is yours."
    )
    assert "with the link" not in text


def test_reschedule_opted_out_and_capped():
    assert staff_texts.reschedule(APPT, blocked=OPTED_OUT) == (
        "A patient asked by voicemail to reschedule their appointment on Wed 25 Nov 09:00 CST. "
        "The link was not sent: the number opted out of texts. "
        "Call the patient back to reschedule: the callback task is yours."
    )
    assert staff_texts.reschedule(APPT, blocked=CAP) == (
        "A patient asked by voicemail to reschedule their appointment on Wed 25 Nov 09:00 CST. "
        "The link was not sent: the number reached its SMS limit (3 SMS in 24 h). "
        "Call the patient back to reschedule: the callback task is yours."
    )


def test_escalations():
    assert staff_texts.urgent_escalation(45) == (
        "Escalation: an urgent clinical callback task was not completed within 45 min of the missed call. "
        "Make sure the callback happens now, or reassign the task."
    )
    assert staff_texts.reschedule_escalation(APPT, 48) == (
        "Escalation: a reschedule request is not handled and the appointment on Wed 25 Nov 09:00 CST is "
        "within 48 h. Make sure the patient is called back today."
    )


def test_the_raw_refusal_reads_like_the_staff_one():
    assert staff_texts.blocked_branch(consent.Refusal.OPTED_OUT) == staff_texts.OPTED_OUT
    assert staff_texts.blocked_branch("frequency cap: 6 SMS in 7 days (cap 6)") == staff_texts.CAPPED
    assert staff_texts.cap_limit("frequency cap: 6 SMS in 7 days (cap 6)") == "6 SMS in 7 days"
