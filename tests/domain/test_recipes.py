"""Texts, routing, ids and action commands of the recipes (domain/recipes.py)."""

from __future__ import annotations

from ringback.domain import recipes
from ringback.schemas import codec
from tests.workflow.harness import T0, practice

CASE = {
    "case_id": "maple-family:abc",
    "practice_id": "maple-family",
    "caller": "+14155550123",
    "scenario": "NEW_PATIENT",
    "missed_at": T0 - 1000,
    "call_reported_at": T0,
}


def test_case_ids_are_deterministic_per_opening_event():
    a = recipes.case_id("maple-family", "+14155550123", "twilio:CA1:no-answer")
    assert a == recipes.case_id("maple-family", "+14155550123", "twilio:CA1:no-answer")
    assert a != recipes.case_id("maple-family", "+14155550123", "twilio:CA2:no-answer")
    assert a.startswith("maple-family:") and "+1415" not in a
    assert recipes.step_of(f"{a}:first_sms") == (a, "first_sms")


def test_default_texts_name_the_practice_carry_the_link_and_the_opt_out_and_fit_one_sms():
    p = practice()
    for name in ("new_patient_first", "new_patient_second", "reschedule_link"):
        body = recipes.render(p, name)
        assert "Maple Family Practice" in body and "STOP" in body and len(body) <= 160, (name, len(body))
    assert "https://book.example.org/maple/reschedule" in recipes.render(p, "reschedule_link")
    ack = recipes.render(p, "urgent_ack", urgent_minutes=recipes.urgent_minutes(p))
    assert "within 30 minutes" in ack and len(ack) <= 160


def test_practice_templates_override_the_defaults():
    p = practice(templates={"new_patient_first": "{practice_name}: call {callback_number}. Reply STOP to opt out."})
    assert recipes.render(p, "new_patient_first") == "Maple Family Practice: call +13125550100. Reply STOP to opt out."
    assert "book.example.org" in recipes.render(p, "new_patient_second")


def test_routing_falls_back_by_role_and_names_a_missing_route():
    p = practice(routing={"scheduling_coordinator": "email:desk@x.org", "manager": "slack:MGR"})
    assert recipes.route(p, recipes.SCHEDULING_QUEUE) == "email:desk@x.org"
    assert recipes.route(p, recipes.DEPARTMENT_MANAGER) == "slack:MGR"
    assert recipes.route(p, recipes.NURSE) == "role:nurse"
    assert recipes.resolve_role(p, recipes.SCHEDULING_QUEUE) == "scheduling_coordinator"
    assert recipes.resolve_role(p, recipes.NURSE) == "nurse"
    assert recipes.staff_params(p, CASE, recipes.SCHEDULING_QUEUE, "x")["role"] == "scheduling_coordinator"
    assert (
        recipes.sms(p, CASE, "s", "new_patient_first", "r", T0, T0, fallback_role=recipes.SCHEDULING_QUEUE)["params"][
            "fallback_role"
        ]
        == "scheduling_coordinator"
    )


def test_first_response_hold_and_the_urgent_acknowledgement_limit():
    p = practice(windows={"first_response_hold": 600})
    assert recipes.first_response_delay_ms(p, "NEW_PATIENT") == 600_000
    assert recipes.first_response_delay_ms(p, "URGENT_EXISTING") == 300_000
    assert recipes.first_response_delay_ms(practice(), "GENERAL_INQUIRY") == 45_000


def test_every_default_window_in_milliseconds():
    p = practice()
    expected = {
        "new_patient_window": 15 * 60,
        "new_patient_followup": 2 * 3600,
        "new_patient_callback_due": 4 * 3600,
        "urgent_window": 30 * 60,
        "urgent_ack": 5 * 60,
        "urgent_escalation": 45 * 60,
        "reschedule_window": 2 * 3600,
        "reschedule_gate": 4 * 3600,
        "reschedule_link_horizon": 14 * 86400,
        "reschedule_protect_horizon": 48 * 3600,
        "general_window": 4 * 3600,
        "general_task_due": 4 * 3600,
        "case_expiry": 24 * 3600,
        "first_response_hold": 45,
    }
    for name, seconds in expected.items():
        assert recipes.window_ms(p, name) == seconds * 1000, name
    assert recipes.response_window_ms(p, "RESCHEDULE") == 2 * 3600 * 1000


def test_an_sms_in_quiet_hours_carries_its_send_time_and_encodes_with_the_schema():
    p = practice()
    now = T0
    later = recipes.sms(p, CASE, "first_sms", "new_patient_first", "why", now, now + 3_600_000)
    assert later["due_at"] == now + 3_600_000 and later["params"]["deferred_until"] == str(now + 3_600_000)
    at_once = recipes.sms(p, CASE, "first_sms", "new_patient_first", "why", now, now)
    assert at_once["due_at"] is None and "deferred_until" not in at_once["params"]
    assert at_once["action_id"] == "maple-family:abc:first_sms"
    assert codec.decode("action_command", codec.encode("action_command", at_once)) == at_once


def test_staff_and_appointment_params_are_strings():
    p = practice()
    params = {
        **recipes.staff_params(p, CASE, "nurse", "call back"),
        **recipes.appointment_params(p, {"appointment_id": "a1", "start": T0 + 86_400_000}),
    }
    assert params["caller"] == "+14155550123" and params["role"] == "nurse"
    assert params["appointment_start"] == str(T0 + 86_400_000) and params["appointment_time"].startswith("Wed 25 Nov")
    command = recipes.action(CASE, "CREATE_TASK", "callback_task", "email:x", "b", "r", T0, params={**params, "n": 3})
    assert all(isinstance(v, str) for v in command["params"].values())
    assert recipes.appointment_params(p, None) == {}
