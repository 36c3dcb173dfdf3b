"""What ringback tells staff in Slack and e-mail: one template per branch of each workflow
(docs/product.md, "What staff are told").

Slack channels and mailboxes are outside the console's access control, so these texts
carry the minimum necessary: never the patient's name or number, the reason for the
call, a clinical detail or anything the patient wrote. They say what happened to the
patient's SMS and what staff should do; the sinks add the practice, the priority, the due
time and the link to the task in the staff console (sinks/records.py), where the roles
that may see the details find them.

Each text says only what is true in its branch: "the SMS went out" only when it did, "do
it if the patient does not use the link" only when a link was sent. Pure: the workflow
picks the branch and renders it.
"""

from __future__ import annotations

from ringback.domain import consent

# ------------------------------------------------------------------ a task was created
TASK_CREATED = "A new task for the {role} is in the staff console."
URGENT_TASK_CREATED = "URGENT: a new urgent clinical callback task for the {role}. Open it now."

# ------------------------------------------------------------------ new patient, first response
_NEW_PATIENT = "A new patient's call was missed."
_BE_READY = "Be ready to book them when they reply or call again."
_CALL_BACK = "Call them back: the callback task is yours."
NEW_PATIENT_SMS_SENT = f"{_NEW_PATIENT} The SMS with the booking link went out. {_BE_READY}"
NEW_PATIENT_SMS_QUIET_HOURS = (
    f"{_NEW_PATIENT} It came in the quiet hours: the SMS with the booking link goes out at {{send_time}}. {_BE_READY}"
)
NEW_PATIENT_OPTED_OUT = f"{_NEW_PATIENT} The SMS was not sent: the number opted out of texts. {_CALL_BACK}"
NEW_PATIENT_CAPPED = f"{_NEW_PATIENT} The SMS was not sent: the number reached its SMS limit ({{limit}}). {_CALL_BACK}"
NEW_PATIENT_NOT_TEXTED = f"{_NEW_PATIENT} The SMS was not sent (the task says why). {_CALL_BACK}"

# ------------------------------------------------------------------ reschedule request, first response
_RESCHEDULE = "A patient asked by voicemail to reschedule their appointment on {appointment_time}."
_IF_NOT_BY_LINK = "Reschedule it if the patient does not do it with the link."
_CALL_TO_RESCHEDULE = "Call the patient back to reschedule: the callback task is yours."
RESCHEDULE_LINK_SENT = f"{_RESCHEDULE} The SMS with the reschedule link went out. {_IF_NOT_BY_LINK}"
RESCHEDULE_LINK_QUIET_HOURS = (
    f"{_RESCHEDULE} It came in the quiet hours: the SMS with the reschedule link goes out at {{send_time}}. "
    f"{_IF_NOT_BY_LINK}"
)
_BEYOND = "The link was not sent: the appointment is more than {horizon_days} days away."
RESCHEDULE_BEYOND_HORIZON = f"{_RESCHEDULE} {_BEYOND} {_CALL_TO_RESCHEDULE}"
RESCHEDULE_OPTED_OUT = f"{_RESCHEDULE} The link was not sent: the number opted out of texts. {_CALL_TO_RESCHEDULE}"
RESCHEDULE_CAPPED = (
    f"{_RESCHEDULE} The link was not sent: the number reached its SMS limit ({{limit}}). {_CALL_TO_RESCHEDULE}"
)
RESCHEDULE_NOT_TEXTED = f"{_RESCHEDULE} The link was not sent (the task says why). {_CALL_TO_RESCHEDULE}"

# ------------------------------------------------------------------ escalations to the manager
URGENT_ESCALATION = (
    "Escalation: an urgent clinical callback task was not completed within {minutes} min of the missed call. "
    "Make sure the callback happens now, or reassign the task."
)
RESCHEDULE_ESCALATION = (
    "Escalation: a reschedule request is not handled and the appointment on {appointment_time} is "
    "within {hours} h. Make sure the patient is called back today."
)

# Why an SMS step did not go, as the workflow's decision says it (workflow/sms.py: consent.for_staff).
OPTED_OUT, CAPPED, NOT_TEXTED = "opted_out", "capped", "not_texted"
_CAP_PREFIX = "frequency cap: "


def blocked_branch(blocked: str) -> str:
    """OPTED_OUT, CAPPED or NOT_TEXTED (blocked number, deceased, FCC profile: the
    console's task says which; Slack and e-mail do not)."""
    if blocked in (consent.Refusal.OPTED_OUT, consent.for_staff(consent.Refusal.OPTED_OUT)):
        return OPTED_OUT
    if blocked.startswith(_CAP_PREFIX):
        return CAPPED
    return NOT_TEXTED


def cap_limit(blocked: str) -> str:
    """ "frequency cap: 3 SMS in 24 h (cap 3)" -> "3 SMS in 24 h" """
    return blocked.removeprefix(_CAP_PREFIX).split(" (", 1)[0]


def role_label(role: str) -> str:
    return role.replace("_", " ")


def task_created(role: str, priority: str) -> str:
    template = URGENT_TASK_CREATED if priority == "URGENT" else TASK_CREATED
    return template.format(role=role_label(role))


def new_patient(send_time: str | None = None, blocked: str | None = None) -> str:
    """The scheduling coordinator's note: the SMS went out (`send_time` None), goes out at
    `send_time` (quiet hours), or was not sent (`blocked`, a callback task instead)."""
    if blocked is not None:
        branch = blocked_branch(blocked)
        if branch == OPTED_OUT:
            return NEW_PATIENT_OPTED_OUT
        if branch == CAPPED:
            return NEW_PATIENT_CAPPED.format(limit=cap_limit(blocked))
        return NEW_PATIENT_NOT_TEXTED
    if send_time is not None:
        return NEW_PATIENT_SMS_QUIET_HOURS.format(send_time=send_time)
    return NEW_PATIENT_SMS_SENT


def reschedule(
    appointment_time: str,
    send_time: str | None = None,
    blocked: str | None = None,
    beyond_horizon_days: int | None = None,
) -> str:
    """The scheduling queue's note about a reschedule request with an upcoming appointment:
    link sent, sent at `send_time` (quiet hours), not sent because the appointment is
    further than the link horizon (`beyond_horizon_days`), or not sent (`blocked`)."""
    if beyond_horizon_days is not None:
        return RESCHEDULE_BEYOND_HORIZON.format(appointment_time=appointment_time, horizon_days=beyond_horizon_days)
    if blocked is not None:
        branch = blocked_branch(blocked)
        if branch == OPTED_OUT:
            return RESCHEDULE_OPTED_OUT.format(appointment_time=appointment_time)
        if branch == CAPPED:
            return RESCHEDULE_CAPPED.format(appointment_time=appointment_time, limit=cap_limit(blocked))
        return RESCHEDULE_NOT_TEXTED.format(appointment_time=appointment_time)
    if send_time is not None:
        return RESCHEDULE_LINK_QUIET_HOURS.format(appointment_time=appointment_time, send_time=send_time)
    return RESCHEDULE_LINK_SENT.format(appointment_time=appointment_time)


def urgent_escalation(minutes: int) -> str:
    return URGENT_ESCALATION.format(minutes=minutes)


def reschedule_escalation(appointment_time: str, hours: int) -> str:
    return RESCHEDULE_ESCALATION.format(appointment_time=appointment_time, hours=hours)
