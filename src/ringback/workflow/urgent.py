"""A missed call from an existing patient with an urgent flag (docs/product.md, "The four scenarios").

After the hold (5 min at the latest): an URGENT clinical callback task to the patient's
assigned provider, else the nurse route, due within the urgent window, and an
acknowledgement SMS to the patient (nothing clinical in it); the task's notice flags it
URGENT to the provider's or nurse's route (recipes.task_notice). At 45 min without the
clinical task completed: an alert to the department manager that links the task. Only
the clinical callback closes the case: not a call that reached the front desk, not a booking.
"""

from __future__ import annotations

from ringback.domain import classify as cls
from ringback.domain import recipes, staff_texts
from ringback.domain.practice import Practice
from ringback.workflow import cases, sms, timers
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case, Ehr


def first_response(
    run: Run, practice: Practice, state: CallerState, case: Case, ehr: Ehr, decided: cls.Classification
) -> None:
    patient = ehr["patient"]
    provider = patient.get("assigned_provider") if patient else None
    if provider:
        role, recipient = recipes.ASSIGNED_PROVIDER, provider
    else:
        role, recipient = recipes.NURSE, recipes.route(practice, recipes.NURSE)
    reason = cls.urgency_reason(decided.urgent_flag) if decided.urgent_flag else "urgent"
    name = (patient.get("display_name") if patient else None) or "patient (name not on file)"
    cases.act(
        run,
        case,
        "CREATE_TASK",
        recipes.CLINICAL_TASK,
        recipient,
        f"Urgent clinical callback: {name} ({reason}).",
        "existing patient with an urgent flag called and was missed",
        priority="URGENT",
        due_at=case["opened_at"] + recipes.window_ms(practice, "urgent_window"),
        params=recipes.staff_params(
            practice,
            case,
            role,
            "Call the patient back within the urgent window.",
            patient_name=name,
            urgency_reason=reason,
        ),
    )
    language = patient.get("language") if patient else None  # the EHR's preferred language
    body = recipes.render(practice, "urgent_ack", language)
    blocked, send_at = sms.decide(run, practice, state, body, patient)
    if blocked is None:
        sms.send(
            run,
            practice,
            state,
            case,
            recipes.ACK_SMS,
            "urgent_ack",
            "acknowledgement of an urgent missed call",
            send_at,
            fallback_role=recipes.NURSE,
            language=language,
        )
        cases.responded(run, case, min(send_at, run.now), "sms" if send_at <= run.now else "task")
    else:
        case["notes"].append(f"acknowledgement SMS not sent: {blocked}")
        cases.responded(run, case, run.now, "task")
    timers.arm(case, timers.ESCALATION, case["opened_at"] + recipes.window_ms(practice, "urgent_escalation"))


def escalation(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    """The `escalation` timer, 45 min without the clinical callback marked complete: alert the manager."""
    if recipes.CLINICAL_TASK in case["tasks_done"]:
        return
    minutes = round(recipes.window_ms(practice, "urgent_escalation") / 60_000)
    cases.alert_manager(
        run,
        practice,
        case,
        recipes.MANAGER_ALERT,
        staff_texts.urgent_escalation(minutes),
        "urgent callback not completed in time",
        "URGENT",
        "Make sure the urgent callback happens now, or reassign it.",
        recipes.CLINICAL_TASK,
    )
