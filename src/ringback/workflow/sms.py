"""Patient SMS in the workflow: whether one may go (`consent.sms_decision`, the same
decision the SMS sink makes again), the SMS or the staff task instead, and what an
inbound text means (opt-out, opt-in, help, a reply).

Blocked (opt-out, caps, FCC profile, deceased patient, blocked number) -> the step
becomes a staff task or a note; quiet hours only defer: the SMS goes out with its send
time and the sink holds it until then.

A reply (any inbound text that is not a consent keyword or HELP) is read by a person:
it creates a "patient replied" task for the role that owns the case (`OWNER`), or adds
to the caller's reply task still open; with no open case the front office gets it. The
text travels only in the task's params (the console shows it to the task's role), never
in the action's body, a log or a staff notification. The reply is a response of the
case (`cases.caller_responded`): it stops the follow-up SMS and converts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from ringback.domain import classify as cls
from ringback.domain import consent, recipes
from ringback.domain.practice import Practice
from ringback.workflow import cases, ehr
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case, Patient, ehr_key

PATIENT_REPLIED = "patient_replied"  # the step of a reply's task action (patient_replied_<n> for the n-th)

# The role that reads a reply, by scenario of the open case (the role its recipe routes to);
# an urgent case's reply goes where its clinical task went (the assigned provider or the nurse).
OWNER = {
    cls.NEW_PATIENT: recipes.SCHEDULING_COORDINATOR,
    cls.URGENT_EXISTING: recipes.NURSE,
    cls.RESCHEDULE: recipes.SCHEDULING_QUEUE,
    cls.GENERAL_INQUIRY: recipes.ADMIN_TEAM,
}
NO_CASE_OWNER = recipes.ADMIN_TEAM  # a text that answers no open case: the front office reads it
REPLY_PRIORITY = {cls.URGENT_EXISTING: "URGENT", cls.NEW_PATIENT: "HIGH"}  # others NORMAL


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
    reply(run, practice, state, event)


def reply(run: Run, practice: Practice, state: CallerState, event: Mapping) -> None:
    """A reply: a CREATE_TASK for the role that reads it, naming the caller's open reply
    task (`task_id`) when there is one, which the sinks add the text to instead
    (domain/tasks.py `add_reply`); one action per reply, its id derived from the case and
    the reply's number (a redelivered event was dropped before: `state.seen`)."""
    case = state["case"]
    at = event["occurred_at"]
    open_task = state.get("reply_task")
    if case is not None:
        cases.caller_responded(run, case, at, cases.SMS_REPLY)
        replied = [s for s in case["steps"] if s.startswith(PATIENT_REPLIED) and not s.endswith(recipes.NOTICE)]
        n = len(replied) + 1
        step = PATIENT_REPLIED if n == 1 else f"{PATIENT_REPLIED}_{n}"
        scenario = case["scenario"]
        role, recipient = _owner(run, practice, state, scenario)
        where: Mapping = case
        params = recipes.staff_params(practice, case, role, _todo(open_task))
    else:
        step, scenario = PATIENT_REPLIED, cls.GENERAL_INQUIRY
        role, recipient = recipes.resolve_role(practice, NO_CASE_OWNER), recipes.route(practice, NO_CASE_OWNER)
        where = {
            "case_id": recipes.case_id(practice.id, state["caller"], event["event_id"]),
            "practice_id": practice.id,
            "scenario": scenario,
            "missed_at": None,
            "call_reported_at": None,
        }
        params = {"role": role, "caller": state["caller"], "todo": _todo(open_task)}
    params |= {"reply_id": event["event_id"], "reply_at": str(at), "reply_text": event.get("sms_body") or ""}
    if open_task is not None:
        params["task_id"] = open_task["task_id"]
    command = recipes.action(
        where,
        "CREATE_TASK",
        step,
        recipient,
        "The patient replied by SMS: read the reply in the console and answer it.",
        "the patient replied by SMS" + (" (no open case)" if case is None else ""),
        run.now,
        priority=REPLY_PRIORITY.get(scenario, "NORMAL"),
        due_at=run.now + recipes.response_window_ms(practice, scenario),
        params=params,
    )
    if case is not None:
        cases.emit(run, case, command)
    else:
        run.tx.actions.append((cases.action_key(practice.id, state["caller"]), command))
        notice = recipes.task_notice(practice, {**where, "caller": state["caller"]}, command)
        if notice is not None:  # the role is told, as cases.emit does for a case's tasks
            run.tx.actions.append((cases.action_key(practice.id, state["caller"]), notice))
    if open_task is None:
        state["reply_task"] = {"task_id": command["action_id"], "replies": 1}
    else:
        open_task["replies"] += 1


def reply_task_done(state: CallerState, task_id: str) -> bool:
    """Staff completed a task: if it was the caller's reply task, the next reply makes a new one."""
    open_task = state.get("reply_task")
    if open_task is None or open_task["task_id"] != task_id:
        return False
    state["reply_task"] = None
    return True


def _owner(run: Run, practice: Practice, state: CallerState, scenario: str) -> tuple[str, str]:
    """(role, recipient) of the staff that read a reply on a case of `scenario`."""
    if scenario == cls.URGENT_EXISTING:
        patient = ehr.load(run, ehr_key(practice.id, state["caller"]))["patient"]
        provider = patient.get("assigned_provider") if patient else None
        if provider:  # as the clinical task (workflow/urgent.py)
            return recipes.ASSIGNED_PROVIDER, provider
    role = OWNER.get(scenario, NO_CASE_OWNER)
    return role, recipes.route(practice, role)


def _todo(open_task: Mapping | None) -> str:
    if open_task is None:
        return "Read the patient's reply and answer it."
    return "The patient replied again: read the replies and answer them."


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
