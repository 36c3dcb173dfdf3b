"""Patient SMS in the workflow: whether one may go (`consent.sms_decision`, the same
decision the SMS sink makes again), the SMS or the staff task instead, and what an
inbound text means (opt-out, opt-in, help, a reply).

Blocked (opt-out, caps, FCC profile, deceased patient, blocked number) -> the step
becomes a staff task or a note; quiet hours only defer: the SMS goes out with its send
time and the sink holds it until then.
"""

from __future__ import annotations

from collections.abc import Mapping

from ringback.domain import classify as cls
from ringback.domain import consent, recipes
from ringback.domain.practice import Practice
from ringback.workflow import cases, ehr
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case, Patient, ehr_key


def decide(
    run: Run, practice: Practice, state: CallerState, body: str, patient: Patient | None = None
) -> tuple[str | None, int]:
    """(why this SMS may not go, as staff read it, or None; when it may go)."""
    refused, send_at = consent.sms_decision(
        practice,
        run.now,
        recipient=state["caller"],
        body=body,
        opted_out=state["consent"]["opted_out"],
        sent_at_ms=state["sms_sent"],
        deceased=bool(patient and patient.get("deceased")),
    )
    return (consent.for_staff(refused) if refused else None), send_at


def send(
    run: Run,
    practice: Practice,
    state: CallerState,
    case: Case,
    step: str,
    template: str,
    reason: str,
    send_at: int,
    fallback_role: str,
    language: str | None = None,
    **extra: str,
) -> None:
    """Emit a patient SMS the decision let go; `fallback_role` calls back if the sink holds it back;
    `language`: the caller's preferred language from the EHR (None: the practice's default)."""
    if step in case["steps"]:
        return
    cases.emit(
        run,
        case,
        recipes.sms(practice, case, step, template, reason, run.now, send_at, fallback_role, language, **extra),
    )
    state["sms_sent"] = consent.prune_sent(state["sms_sent"], run.now) + [send_at]


def task_instead(
    run: Run, practice: Practice, case: Case, instead_of: str, blocked: str, role: str, due: int, priority: str
) -> None:
    """The staff callback task an SMS step becomes when the decision refuses the SMS."""
    if recipes.CALLBACK_TASK in case["steps"]:
        return
    cases.act(
        run,
        case,
        "CREATE_TASK",
        recipes.CALLBACK_TASK,
        recipes.route(practice, role),
        "Call the patient back: an automatic SMS could not be sent.",
        f"SMS not sent: {blocked}",
        priority=priority,
        due_at=due,
        params={
            **recipes.staff_params(practice, case, role, "Call the caller back (no SMS was sent)."),
            "instead_of": instead_of,
            "blocked_reason": blocked,
        },
    )


# ------------------------------------------------------------------ inbound texts
def inbound(run: Run, practice: Practice, state: CallerState, event: Mapping) -> None:
    """An SMS from the caller: STOP & co. or a sentence opts out, START/UNSTOP/YES opts
    back in, HELP is answered by the carrier; anything else is a reply to our response."""
    body = event.get("sms_body") or ""
    intent = consent.sms_intent(body)
    c = state["consent"]
    if intent == consent.OPT_OUT:
        if c["opted_out"]:
            return
        by_keyword = consent.is_keyword(body)
        c["opted_out"], c["changed_at"] = True, event["occurred_at"]
        c["source"] = "keyword" if by_keyword else "sentence"
        c["optouts"] += 1
        if not by_keyword:  # keyword opt-outs are confirmed by the carrier itself
            _confirm_opt_out(run, practice, state, event)
        return
    if intent == consent.OPT_IN:
        if c["opted_out"]:
            c["opted_out"], c["changed_at"], c["source"] = False, event["occurred_at"], "keyword"
        return
    if intent == consent.HELP:
        return
    case = state["case"]
    if case is None or case["first_response_at"] is None:
        return  # a text that answers nothing of ours
    case["replied_at"] = event["occurred_at"]
    if case["scenario"] == cls.NEW_PATIENT:
        cases.convert(run, state, "sms_reply", event["occurred_at"])


def carrier_opt_out(state: CallerState, at: int) -> bool:
    """Twilio error 21610 (unsubscribed recipient) is an opt-out; whether it changed anything."""
    c = state["consent"]
    if c["opted_out"]:
        return False
    c["opted_out"], c["changed_at"], c["source"] = True, at, "carrier_21610"
    c["optouts"] += 1
    return True


def _confirm_opt_out(run: Run, practice: Practice, state: CallerState, event: Mapping) -> None:
    """The single confirmation text a sentence opt-out may get, on the open case (the n-th
    opt-out's step is `optout_confirmation_<n>`) or on a case id derived from the text; in the
    language the caller's EHR record prefers."""
    patient = ehr.load(run, ehr_key(practice.id, state["caller"]))["patient"]
    language, _ = recipes.choose_text(practice, "optout_confirmation", patient.get("language") if patient else None)
    body = recipes.render(practice, "optout_confirmation", language)
    refused, _ = consent.sms_decision(
        practice,
        run.now,
        recipient=state["caller"],
        body=body,
        opted_out=True,
        sent_at_ms=state["sms_sent"],
        confirmation=True,
    )
    if refused:
        return
    case = state["case"]
    n = state["consent"]["optouts"]
    params = {"consent_confirmation": "1", "template": "optout_confirmation", "language": language}
    reason = "confirmation of an opt-out sent in a sentence"
    if case is not None:
        step = recipes.OPTOUT_CONFIRMATION if n == 1 else f"{recipes.OPTOUT_CONFIRMATION}_{n}"
        command = recipes.action(case, "SEND_SMS", step, state["caller"], body, reason, run.now, params=params)
        cases.emit(run, case, command)
        return
    outside = {
        "case_id": recipes.case_id(practice.id, state["caller"], event["event_id"]),
        "practice_id": practice.id,
        "scenario": cls.GENERAL_INQUIRY,
        "missed_at": None,
        "call_reported_at": None,
    }
    command = recipes.action(
        outside, "SEND_SMS", recipes.OPTOUT_CONFIRMATION, state["caller"], body, reason, run.now, params=params
    )
    run.tx.actions.append((cases.action_key(practice.id, state["caller"]), command))
