"""A missed call from a number not in the patient records (docs/product.md, "The four scenarios").

After the hold: the booking-link SMS (or, when it may not go, a HIGH callback task due
within the new-patient window) and a note to the scheduling coordinator. At 2 h without
a reply or booking: a second SMS and a callback task due in 4 h. A reply (workflow/sms.py),
a booking (workflow/cases.py) or the completed callback task converts the case.
"""

from __future__ import annotations

from ringback.domain import recipes, staff_texts
from ringback.domain.practice import Practice
from ringback.workflow import cases, sms, timers
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case

COORDINATOR = recipes.SCHEDULING_COORDINATOR


def first_response(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    blocked, send_at = sms.decide(run, practice, state, recipes.render(practice, "new_patient_first"))
    # The coordinator's note says what really happened to the SMS (domain/staff_texts.py);
    # when a callback task replaces the SMS, the note names it, with its priority and due time.
    priority, due, task_id = "NORMAL", None, None
    if blocked is None:
        sms.send(
            run,
            practice,
            state,
            case,
            recipes.FIRST_SMS,
            "new_patient_first",
            "missed call from a number not in the patient records",
            send_at,
            fallback_role=COORDINATOR,
        )
        deferred = send_at > run.now
        note = staff_texts.new_patient(send_time=recipes.local_time(send_at, practice.time_zone) if deferred else None)
        todo = "Be ready to book this caller when they reply or call again."
        cases.responded(run, case, send_at, "sms")
    else:
        priority, due = "HIGH", case["opened_at"] + recipes.window_ms(practice, "new_patient_window")
        sms.task_instead(run, practice, case, recipes.FIRST_SMS, blocked, COORDINATOR, due, priority)
        task_id = recipes.action_id(case["case_id"], recipes.CALLBACK_TASK)
        note = staff_texts.new_patient(blocked=blocked)
        todo = "Call the caller back: no SMS was sent."
        cases.responded(run, case, run.now, "task")
    cases.act(
        run,
        case,
        "NOTIFY_STAFF",
        recipes.NOTIFY_COORDINATOR,
        recipes.route(practice, COORDINATOR),
        note,
        "new patient inquiry: scheduling coordinator informed",
        priority=priority,
        due_at=due,
        params=recipes.staff_params(practice, case, COORDINATOR, todo, task_id=task_id),
    )
    timers.arm(case, timers.FOLLOWUP, case["opened_at"] + recipes.window_ms(practice, "new_patient_followup"))


def followup(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    """The `followup` timer, 2 h without a reply or booking: second SMS + manual callback task due in 4 h."""
    emitted = 0
    if recipes.SECOND_SMS not in case["steps"] and recipes.FIRST_SMS in case["steps"]:
        blocked, send_at = sms.decide(run, practice, state, recipes.render(practice, "new_patient_second"))
        if blocked is None:
            sms.send(
                run,
                practice,
                state,
                case,
                recipes.SECOND_SMS,
                "new_patient_second",
                "new patient: no reply or booking within the follow-up window",
                send_at,
                fallback_role=COORDINATOR,
            )
            emitted += 1
        else:
            case["notes"].append(f"second SMS not sent: {blocked}")
    if recipes.CALLBACK_TASK not in case["steps"]:
        cases.act(
            run,
            case,
            "CREATE_TASK",
            recipes.CALLBACK_TASK,
            recipes.route(practice, COORDINATOR),
            "Call back a new patient who has not replied or booked.",
            "new patient: no reply or booking within the follow-up window",
            priority="NORMAL",
            due_at=run.now + recipes.window_ms(practice, "new_patient_callback_due"),
            params=recipes.staff_params(practice, case, COORDINATOR, "Call the caller back and offer an appointment."),
        )
        emitted += 1
    if emitted:
        cases.escalate(run, case)
