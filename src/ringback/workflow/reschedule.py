"""A voicemail asking to reschedule or cancel an appointment (docs/product.md, "The four scenarios").

After the hold: with the next appointment within the link horizon (14 days), the
reschedule-link SMS, else a callback task to the scheduling queue; with an upcoming
appointment, a note to scheduling with its details and the 4 h gate armed. At 4 h, not
rescheduled and the appointment within 48 h: a HIGH task and an alert to the manager.
The appointment moved or cancelled converts the case (workflow/cases.py). A transcript
arriving after a general-inquiry response turns that case into a reschedule request.
"""

from __future__ import annotations

from ringback.domain import classify as cls
from ringback.domain import recipes, staff_texts
from ringback.domain.practice import Practice
from ringback.workflow import cases, ehr, sms, timers
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case, ehr_key

QUEUE = recipes.SCHEDULING_QUEUE


def first_response(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    data = ehr.load(run, ehr_key(practice.id, state["caller"]))
    appointment = ehr.next_appointment(data, run.now)
    due = case["opened_at"] + recipes.window_ms(practice, "reschedule_window")
    first_time = case["first_response_at"] is None
    responded_at, channel = run.now, "task"
    horizon = recipes.window_ms(practice, "reschedule_link_horizon")
    # What scheduling is told follows what really happened to the link (domain/staff_texts.py).
    send_time: str | None = None
    blocked: str | None = None
    if appointment is not None:
        case["appointment"] = {"appointment_id": appointment["appointment_id"], "start": appointment["start"]}
    if appointment is not None and appointment["start"] - run.now <= horizon:
        patient = data["patient"]
        language = patient.get("language") if patient else None  # the EHR's preferred language
        body = recipes.render(practice, "reschedule_link", language)
        blocked, send_at = sms.decide(run, practice, state, body, patient)
        if blocked is None:
            sms.send(
                run,
                practice,
                state,
                case,
                recipes.RESCHEDULE_SMS,
                "reschedule_link",
                "voicemail asks to reschedule; appointment within the link horizon",
                send_at,
                fallback_role=QUEUE,
                language=language,
            )
            responded_at, channel = min(send_at, run.now), ("sms" if send_at <= run.now else "task")
            if send_at > run.now:
                send_time = recipes.local_time(send_at, practice.time_zone)
        else:
            sms.task_instead(run, practice, case, recipes.RESCHEDULE_SMS, blocked, QUEUE, due, "NORMAL")
    else:
        why = (
            "no upcoming appointment"
            if appointment is None
            else "the next appointment is beyond the reschedule-link horizon"
        )
        cases.act(
            run,
            case,
            "CREATE_TASK",
            recipes.CALLBACK_TASK,
            recipes.route(practice, QUEUE),
            f"Reschedule request by voicemail; {why}.",
            f"reschedule request: {why}",
            due_at=due,
            params={
                **recipes.staff_params(practice, case, QUEUE, "Call the patient back to reschedule."),
                **recipes.appointment_params(practice, appointment),
            },
        )
    if appointment is not None:
        link_sent = case["steps"].get(recipes.RESCHEDULE_SMS) is not None
        details = recipes.appointment_params(practice, appointment)
        note = staff_texts.reschedule(
            details["appointment_time"],
            send_time=send_time,
            blocked=blocked,
            beyond_horizon_days=None if appointment["start"] - run.now <= horizon else round(horizon / 86_400_000),
        )
        task_id = None if link_sent else recipes.action_id(case["case_id"], recipes.CALLBACK_TASK)
        todo = (
            "Reschedule the appointment if the patient does not do it with the link."
            if link_sent
            else "Call the patient back to reschedule: no link was sent."
        )
        cases.act(
            run,
            case,
            "NOTIFY_STAFF",
            recipes.NOTIFY_SCHEDULING,
            recipes.route(practice, QUEUE),
            note,
            "reschedule request by voicemail",
            due_at=None if link_sent else due,
            params={**recipes.staff_params(practice, case, QUEUE, todo, task_id=task_id), **details},
        )
        timers.arm(case, timers.PROTECT, case["opened_at"] + recipes.window_ms(practice, "reschedule_gate"))
    if first_time:
        cases.responded(run, case, responded_at, channel)


def late_transcript(run: Run, practice: Practice, state: CallerState, case: Case, text: str) -> None:
    """The transcript of the case's voicemail came after the general-inquiry response went
    out: with reschedule intent the case becomes a reschedule request and gets its steps too."""
    if case["first_response_at"] is None or case["scenario"] != cls.GENERAL_INQUIRY or not cls.reschedule_intent(text):
        return
    case["scenario"] = cls.RESCHEDULE
    case["reason"] = "voicemail asks to reschedule or cancel an appointment (transcript arrived late)"
    first_response(run, practice, state, case)


def protect(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    """The `protect` timer, 4 h: not rescheduled and the appointment within 48 h: HIGH task + alert."""
    target = case.get("appointment")
    data = ehr.load(run, ehr_key(practice.id, state["caller"]))
    appointment = data["appointments"].get(target["appointment_id"]) if target else None
    if appointment is None or appointment.get("status") not in ehr.UPCOMING or appointment["start"] <= run.now:
        case["notes"].append("appointment gate: nothing left to protect")
        return
    start = appointment["start"]
    if start - run.now > recipes.window_ms(practice, "reschedule_protect_horizon"):
        case["notes"].append("appointment gate: appointment beyond the protection horizon")
        return
    due = min(start, run.now + recipes.window_ms(practice, "reschedule_window"))
    details = recipes.appointment_params(practice, appointment)
    cases.act(
        run,
        case,
        "CREATE_TASK",
        recipes.PROTECT_TASK,
        recipes.route(practice, QUEUE),
        f"Not rescheduled yet: the appointment on {details['appointment_time']} is soon. Call the patient now.",
        "reschedule request not handled and the appointment is within the protection horizon",
        priority="HIGH",
        due_at=due,
        params={
            **recipes.staff_params(practice, case, QUEUE, "Call the patient and reschedule or confirm."),
            **details,
        },
    )
    cases.alert_manager(
        run,
        practice,
        case,
        recipes.PROTECT_ALERT,
        staff_texts.reschedule_escalation(
            details["appointment_time"], round(recipes.window_ms(practice, "reschedule_protect_horizon") / 3_600_000)
        ),
        "reschedule request not handled; appointment within the protection horizon",
        "HIGH",
        "Make sure the patient is called back today.",
        recipes.PROTECT_TASK,
    )
