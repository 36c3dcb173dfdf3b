"""What each scenario sends at each step, as action commands (docs/product.md, docs/stream-app.md).

Pure: no Kafka, no clock (`now_ms` comes in). The workflow (src/ringback/workflow/)
decides *when* a step runs; this module decides *what* it says and to whom.

Action contract (src/ringback/schemas/action_command.avsc), relied on by the sinks and the console:

* `action_id` = `case_id:step`; one action per case and step, ever.
* `recipient`: the patient's E.164 for SEND_SMS; for staff actions the routing target of
  the role (`practice.routing[role]`, e.g. `email:...`, `slack:...`), or `role:<role>`
  when the practice has no route for it.
* `params` (all strings): `role` (staff actions: the routing key used), `caller` (patient
  E.164, staff actions), `fallback_role` (SMS: who calls back if the sink holds it back),
  `call_time` (local time of the missed call), `todo` (what staff should do),
  `template` + `language` (SMS: the language of the body), `deferred_until` (epoch ms,
  SMS in quiet hours; also `due_at`),
  `instead_of` + `blocked_reason` (a task created because an SMS step was blocked),
  `patient_name` + `urgency_reason` (clinical task only), `appointment_id` +
  `appointment_start` (epoch ms) + `appointment_time` (reschedule steps),
  `consent_confirmation`="1" (the single opt-out confirmation text), `task_id` (a staff
  notification about a task: the sinks link to it in the staff console).

Every CREATE_TASK goes out with a NOTIFY_STAFF to its role's routing target (`task_notice`,
step `<task step>_notice`): staff are told at once, with no patient detail (domain/staff_texts.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from ringback.domain import staff_texts, templates
from ringback.domain.practice import Practice

# ------------------------------------------------------------------ steps
FIRST_SMS = "first_sms"  # new patient: booking link
NOTIFY_COORDINATOR = "notify_coordinator"  # new patient: scheduling coordinator told
CALLBACK_TASK = "callback_task"  # manual callback (new patient 2 h gate, or an SMS step blocked)
SECOND_SMS = "second_sms"  # new patient 2 h gate
CLINICAL_TASK = "clinical_task"  # urgent: task straight to provider/nurse
ACK_SMS = "ack_sms"  # urgent: patient acknowledgement
MANAGER_ALERT = "manager_alert"  # urgent 45 min gate
RESCHEDULE_SMS = "reschedule_sms"  # reschedule: link (appointment within 14 days)
NOTIFY_SCHEDULING = "notify_scheduling"  # reschedule: coordinator told, with appointment details
PROTECT_TASK = "protect_task"  # reschedule 4 h gate (appointment within 48 h)
PROTECT_ALERT = "protect_alert"  # reschedule 4 h gate: internal alert
ADMIN_TASK = "admin_task"  # general inquiry
OPTOUT_CONFIRMATION = "optout_confirmation"  # the single confirmation of a sentence opt-out
NOTICE = "_notice"  # suffix: `<task step>_notice` tells the task's role it has a new task

# Steps whose completion (task update COMPLETE) means the patient was called back.
CALLBACK_STEPS = frozenset({CALLBACK_TASK, CLINICAL_TASK, PROTECT_TASK, ADMIN_TASK})

# ------------------------------------------------------------------ roles and routing
SCHEDULING_COORDINATOR = "scheduling_coordinator"
SCHEDULING_QUEUE = "scheduling_queue"
NURSE = "nurse"
ASSIGNED_PROVIDER = "assigned_provider"
DEPARTMENT_MANAGER = "department_manager"
ADMIN_TEAM = "admin_team"

_FALLBACK_ROLES = {
    SCHEDULING_QUEUE: (SCHEDULING_COORDINATOR,),
    NURSE: ("provider", "clinical"),
    DEPARTMENT_MANAGER: ("manager",),
    ADMIN_TEAM: ("admin", "front_desk", SCHEDULING_COORDINATOR),
    SCHEDULING_COORDINATOR: ("scheduling", "front_desk"),
}


def resolve_role(practice: Practice, role: str) -> str:
    """The routing key that serves `role` at this practice (the role itself, or a fallback)."""
    for name in (role, *_FALLBACK_ROLES.get(role, ())):
        if practice.routing.get(name):
            return name
    return role


def route(practice: Practice, role: str) -> str:
    """The routing target for a role; `role:<role>` when the practice has none."""
    return practice.routing.get(resolve_role(practice, role)) or f"role:{role}"


def is_channel(target: str) -> bool:
    """A target the sinks can send to (`slack:<SECRET>`, `email:<address>`)."""
    return target.startswith(("slack:", "email:"))


def notice_target(practice: Practice, role: str, recipient: str) -> str | None:
    """Where a task's role is told about it: the task's recipient when that is a channel
    (a provider routed by an `email:` reference), a provider's routing entry, the role's
    route (an assigned provider without one: the nurse route, the clinical team); None
    when the practice routes it nowhere."""
    fallback = NURSE if role == ASSIGNED_PROVIDER else role
    for target in (recipient, practice.routing.get(recipient) or "", route(practice, fallback)):
        if is_channel(target):
            return target
    return None


# ------------------------------------------------------------------ windows
SCENARIO_WINDOW = {
    "NEW_PATIENT": "new_patient_window",
    "URGENT_EXISTING": "urgent_window",
    "RESCHEDULE": "reschedule_window",
    "GENERAL_INQUIRY": "general_window",
}


def window_ms(practice: Practice, name: str) -> int:
    """A window of the practice (its default unless overridden), in milliseconds."""
    return int(getattr(practice.windows, name)) * 1000


def response_window_ms(practice: Practice, scenario: str) -> int:
    return window_ms(practice, SCENARIO_WINDOW[scenario])


def first_response_delay_ms(practice: Practice, scenario: str) -> int:
    """How long after the missed call the first response waits (cancel if answered).

    The hold applies to every scenario; the urgent acknowledgement is due within
    `urgent_ack` (5 min) at the latest, so a longer hold never delays it."""
    hold = window_ms(practice, "first_response_hold")
    if scenario == "URGENT_EXISTING":
        return min(hold, window_ms(practice, "urgent_ack"))
    return hold


# ------------------------------------------------------------------ texts
class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def choose_text(practice: Practice, template: str, language: str | None = None) -> tuple[str, str]:
    """(language, template text) of a patient SMS for a caller whose EHR record prefers
    `language` (None: unknown caller or no preference): domain/templates.py decides."""
    return templates.choose(
        template, language, practice.default_language, practice.templates, practice.templates_by_language
    )


def placeholder_values(practice: Practice, **extra: str) -> dict[str, str]:
    """What the placeholders of a patient SMS stand for at this practice (nothing clinical)."""
    return {
        "practice_name": practice.name,
        "booking_link": practice.booking_link,
        "reschedule_link": practice.reschedule_link or practice.booking_link,
        "callback_number": practice.phone_numbers[0] if practice.phone_numbers else "",
        "urgent_minutes": urgent_minutes(practice),
        **extra,
    }


def render_text(practice: Practice, text: str, **extra: str) -> str:
    return text.format_map(_Blank(placeholder_values(practice, **extra)))


def render(practice: Practice, template: str, language: str | None = None, **extra: str) -> str:
    """A patient SMS body in the caller's language (`language`, from the EHR; else the
    practice's default). Only non-clinical placeholders exist (practice name, links,
    callback number, the urgent window in minutes)."""
    lang, text = choose_text(practice, template, language)
    try:
        return render_text(practice, text, **extra)
    except (ValueError, IndexError, AttributeError):  # a malformed override: the shipped text still works
        shipped = templates.SHIPPED.get(lang, templates.SHIPPED[templates.DEFAULT_LANGUAGE])
        return render_text(practice, shipped[template], **extra)


def urgent_minutes(practice: Practice) -> str:
    return str(max(1, math.ceil(practice.windows.urgent_window / 60)))


def local_time(ms: int, time_zone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(time_zone)).strftime("%a %d %b %H:%M %Z")


# ------------------------------------------------------------------ ids and actions
def case_id(practice_id: str, caller: str, opening_event_id: str) -> str:
    """Deterministic: a replay of the same opening event yields the same case id."""
    digest = hashlib.sha256(f"{practice_id}|{caller}|{opening_event_id}".encode()).hexdigest()[:20]
    return f"{practice_id}:{digest}"


def action_id(cid: str, step: str) -> str:
    return f"{cid}:{step}"


def step_of(task_id: str) -> tuple[str, str]:
    """(case_id, step) of an action id."""
    cid, _, step = task_id.rpartition(":")
    return cid, step


def action(
    case: Mapping,
    kind: str,
    step: str,
    recipient: str,
    body: str | None,
    reason: str,
    now_ms: int,
    priority: str = "NORMAL",
    due_at: int | None = None,
    params: Mapping[str, str | None] | None = None,  # None values are left out
) -> dict:
    """One action command of a case step (schemas/action_command.avsc)."""
    return {
        "action_id": action_id(case["case_id"], step),
        "case_id": case["case_id"],
        "practice_id": case["practice_id"],
        "kind": kind,
        "step": step,
        "scenario": case["scenario"],
        "recipient": recipient,
        "body": body,
        "reason": reason,
        "priority": priority,
        "created_at": now_ms,
        "due_at": due_at,
        "missed_at": case["missed_at"],
        "call_reported_at": case["call_reported_at"],
        "params": {k: str(v) for k, v in (params or {}).items() if v is not None},
    }


def task_notice(practice: Practice, case: Mapping, task: Mapping) -> dict | None:
    """The NOTIFY_STAFF that tells a task's role at once that the task exists: the role,
    the priority (URGENT flagged), the due time and the task's id for the console link;
    nothing about the patient in its text (`caller` is a param for keys and readers of the
    actions topic, never rendered). None when the practice routes the role nowhere."""
    params = task.get("params") or {}
    if params.get("task_id"):
        return None  # adds to an open task (a further reply): its role was told when it was created
    role = params.get("role") or task["recipient"]
    target = notice_target(practice, role, task["recipient"])
    if target is None:
        return None
    priority = task.get("priority") or "NORMAL"
    return action(
        case,
        "NOTIFY_STAFF",
        task["step"] + NOTICE,
        target,
        staff_texts.task_created(role, priority),
        "a task was created for this role",
        task["created_at"],
        priority=priority,
        due_at=task.get("due_at"),
        params={"role": role, "task_id": task["action_id"], "caller": case.get("caller")},
    )


def staff_params(practice: Practice, case: Mapping, role: str, todo: str, **extra) -> dict:
    if role != ASSIGNED_PROVIDER:
        role = resolve_role(practice, role)
    return {
        "role": role,
        "caller": case["caller"],
        "call_time": local_time(case["missed_at"], practice.time_zone),
        "todo": todo,
        **extra,
    }


def sms(
    practice: Practice,
    case: Mapping,
    step: str,
    template: str,
    reason: str,
    now_ms: int,
    send_at: int,
    fallback_role: str | None = None,
    language: str | None = None,
    **extra: str,
) -> dict:
    """A patient SMS; `send_at` later than now means quiet hours (the sink defers it).
    `fallback_role`: who calls back if the sink has to hold the SMS back after all;
    `language`: the caller's preferred language from the EHR (None: the practice default)."""
    params = {"template": template, "language": choose_text(practice, template, language)[0]}
    if fallback_role:
        params["fallback_role"] = resolve_role(practice, fallback_role)
    if send_at > now_ms:
        params["deferred_until"] = str(send_at)
    return action(
        case,
        "SEND_SMS",
        step,
        case["caller"],
        render(practice, template, language, **extra),
        reason,
        now_ms,
        due_at=send_at if send_at > now_ms else None,
        params=params,
    )


def appointment_params(practice: Practice, appointment: Mapping | None) -> dict:
    if not appointment:
        return {}
    return {
        "appointment_id": appointment["appointment_id"],
        "appointment_start": str(appointment["start"]),
        "appointment_time": local_time(appointment["start"], practice.time_zone),
    }
