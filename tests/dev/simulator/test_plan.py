"""The traffic simulator's plan (src/ringback/dev/simulator/plan.py): pure, seeded, shaped like the
reference practice's day (docs/product.md), with every reaction inside the window it must beat."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from ringback.config.practices_file import parse_practices
from ringback.dev.simulator import plan as sim
from ringback.dev.simulator.practices import demo_practices, scaled_windows
from ringback.domain import classify, consent, recipes
from ringback.sources.gvoice import audit_log


def sites(n: int = 6, speed: float = 600, calls: int = 94, gvoice_via: str = sim.GV_EMAIL):
    data, providers = demo_practices(n, speed)
    practices = parse_practices(yaml.safe_load(yaml.safe_dump(data))).practices
    return sim.sites_for(practices, providers, calls=calls, gvoice_via=gvoice_via)


def day_plan(seed=7, n=6, speed=600.0, calls=94, gvoice_via=sim.GV_EMAIL, start=None) -> sim.Plan:
    """A day of `n` practices (6: one per phone system, the last on Google Voice)."""
    return sim.plan_day(seed, sites(n, speed, calls, gvoice_via), sim.Day(speed=speed, start=start))


def test_the_same_seed_gives_the_same_day_and_another_seed_another():
    a, b, c = day_plan(7), day_plan(7), day_plan(8)
    assert a.events == b.events and a.preload == b.preload
    assert [(x.case, x.caller, x.sms_steps) for x in a.cases] == [(x.case, x.caller, x.sms_steps) for x in b.cases]
    assert a.events != c.events


def test_a_practice_has_the_same_day_whatever_the_number_of_practices():
    one, five = day_plan(n=1), day_plan(n=6)
    maple = [e for e in five.events if e.practice_id == "maple-family"]
    assert [(e.at, e.kind, e.caller, e.call_id) for e in one.events] == [
        (e.at, e.kind, e.caller, e.call_id) for e in maple
    ]


def test_the_reference_practice_takes_94_calls_and_misses_18_with_the_reference_mix():
    plan = day_plan()
    counts = plan.counts["maple-family"]
    assert (counts["calls"], counts["missed"], counts["answered"]) == (94, 18, 76)
    cases = [c for c in plan.cases if c.practice_id == "maple-family"]
    assert Counter(c.scenario for c in cases) == {sim.NEW: 7, sim.URGENT: 3, sim.RESCHEDULE: 4, sim.GENERAL: 2}
    maple_calls = [e for e in plan.events if e.practice_id == "maple-family" and e.kind == sim.CALL]
    blocked = sites()[0].practice.blocked_numbers[0]
    assert sum(1 for e in maple_calls if e.caller == blocked) == 1  # the spam call
    assert [c.calls for c in cases].count(2) == 1  # the caller who misses twice: one case
    repeat = next(c for c in cases if c.calls == 2)
    assert repeat.scenario == sim.NEW and repeat.behaviour in ("silent", "silent_staff")


def test_calls_peak_at_8_to_10_and_12_to_2_and_misses_more_so():
    plan = day_plan(seed=3, n=20)
    calls = [e for e in plan.events if e.kind == sim.CALL]
    hour = Counter(sim.DAY_OPEN_H + int(e.at * plan.day.speed // 3600) for e in calls)
    peak = [hour[h] for h in sim.PEAK_HOURS]
    off = [hour[h] for h in range(8, 18) if h not in sim.PEAK_HOURS]
    assert min(peak) > max(off)
    missed = [e for e in calls if e.outcome != sim.ANSWERED]
    at_peak = sum(1 for e in missed if sim.DAY_OPEN_H + int(e.at * plan.day.speed // 3600) in sim.PEAK_HOURS)
    share_calls_at_peak = sum(peak) / len(calls)
    assert at_peak / len(missed) > share_calls_at_peak + 0.1


def test_the_miss_rate_is_about_19_percent():
    plan = day_plan(seed=11, n=30)
    total = Counter()
    for counts in plan.counts.values():
        total.update(counts)
    assert total["calls"] == total["missed"] + total["answered"]
    assert 0.16 <= total["missed"] / total["calls"] <= 0.22
    assert Counter(c.scenario for c in plan.cases).most_common(1)[0][0] == sim.NEW


def test_providers_are_mixed_and_the_day_runs_in_about_a_minute():
    plan = day_plan()
    assert {s.provider for s in plan.sites} == set(sim.PROVIDERS)
    assert plan.day.length_s == 60
    assert 60 <= plan.length_s <= 120  # reactions to the last calls come after closing
    assert plan.events == sorted(plan.events, key=lambda e: (e.at, e.practice_id, e.seq))
    assert {e.kind for e in plan.events} == {sim.CALL, sim.TRANSCRIPT, sim.SMS, sim.EHR, sim.STAFF, sim.JUNK}
    assert {e.junk for e in plan.events if e.kind == sim.JUNK} == {
        "forged",
        "unknown_number",
        "malformed",
        "redelivery",
        "bad_cdr_line",
        "unreadable",
    }


def test_calls_of_one_second_resolution_providers_start_on_whole_seconds():
    plan = day_plan()
    for e in plan.events:
        if e.kind == sim.CALL and e.provider in sim.SECOND_RESOLUTION:
            assert e.at == int(e.at)


def test_reactions_come_inside_the_windows_they_must_beat():
    plan = day_plan(seed=5, n=10)
    by_practice = {s.practice.id: s.practice.windows for s in plan.sites}
    cases = {c.case: c for c in plan.cases}
    for e in plan.events:
        if e.case is None or e.kind == sim.JUNK:
            continue
        case, w = cases[e.case], by_practice[e.practice_id]
        after = e.at - case.missed_at
        if e.kind == sim.SMS or (e.kind in (sim.EHR, sim.CALL) and e.after_sms):
            assert e.after_sms and e.caller == case.caller and case.sms_steps  # it answers an SMS it got
            window = w.new_patient_followup if case.scenario == sim.NEW else w.reschedule_gate
            assert 0 < after <= 0.5 * window + 1, (e, case)  # +1: whole-second alignment
        if e.kind == sim.STAFF:
            assert after < w.case_expiry
            if case.behaviour == "nurse_in_time":
                assert after < w.urgent_escalation
            if case.behaviour == "nurse_late":
                assert after > w.urgent_escalation
            if e.step == recipes.CALLBACK_TASK and case.scenario == sim.NEW:
                assert after > w.new_patient_followup
            if e.step == recipes.PROTECT_TASK:
                assert after > w.reschedule_gate
        if e.kind == sim.TRANSCRIPT:
            assert 0 < after < 1


def test_expected_sms_follow_the_workflow_rules():
    plan = day_plan(seed=9, n=10)
    for c in plan.cases:
        steps = c.sms_steps
        if c.scenario == sim.NEW:
            assert steps[0] == recipes.FIRST_SMS or c.behaviour == "through_in_hold"
            # A caller who gets through unseen (Google Voice e-mails nothing) is silent to the workflow.
            assert (recipes.SECOND_SMS in steps) == c.behaviour.startswith(("silent", "calls_back_unseen"))
            assert (recipes.OPTOUT_CONFIRMATION in steps) == (c.behaviour == "stop_sentence")
        elif c.scenario == sim.URGENT:
            assert steps == (recipes.ACK_SMS,)
        elif c.scenario == sim.RESCHEDULE:
            assert steps in ((recipes.RESCHEDULE_SMS,), ())
        else:
            assert steps == ()
    expected = plan.expected_sms()
    assert expected[recipes.FIRST_SMS] == sum(1 for c in plan.cases if c.scenario == sim.NEW)
    assert plan.summary()["sms_expected"] == sum(expected.values()) > 0


def test_texts_mean_what_the_plan_says_they_mean():
    for text in sim.RESCHEDULE_VOICEMAILS:
        assert classify.reschedule_intent(text), text
    for text in sim.GENERAL_VOICEMAILS + sim.URGENT_VOICEMAILS + sim.NEW_PATIENT_VOICEMAILS:
        assert not classify.reschedule_intent(text), text
    for text in sim.REPLIES:
        assert consent.sms_intent(text) is None, text
    assert consent.sms_intent("STOP") == consent.OPT_OUT
    assert consent.sms_intent("Please stop texting me") == consent.OPT_OUT
    for _, code, display, priority in sim.URGENT_FLAGS:
        assert classify.is_urgent_flag({"status": "active", "code": code, "display": display, "priority": priority})


def test_scaled_windows_keep_their_order_and_the_hold_may_be_zero():
    w = scaled_windows(600)
    assert w["first_response_hold"] == 0 and w["urgent_ack"] == 1
    assert w["new_patient_followup"] == 12 and w["urgent_escalation"] == 5 and w["reschedule_gate"] == 24
    assert w["case_expiry"] == 36 and "reschedule_link_horizon" not in w
    assert scaled_windows(1)["first_response_hold"] == 45 and scaled_windows(1)["case_expiry"] == 6 * 3600
    for speed in (30, 300, 600, 1200, 1800):
        w = scaled_windows(speed)
        assert w["urgent_escalation"] < w["new_patient_followup"] <= w["reschedule_gate"] < w["case_expiry"]


def test_the_demo_practices_file_is_valid_and_names_its_secrets_only():
    data, providers = demo_practices(12, 600)
    parsed = parse_practices(yaml.safe_load(yaml.safe_dump(data))).practices
    assert [p.id for p in parsed][:2] == ["maple-family", "lakeside-peds"]
    assert providers[:6] == list(sim.PROVIDERS)
    numbers = [n for p in parsed for n in p.phone_numbers]
    assert len(numbers) == len(set(numbers))
    for p in parsed:
        assert all(v.isupper() for v in p.secrets.values())
        assert p.sms_from == p.phone_numbers[0]


def _when(event: sim.SimEvent, callback: str, speed: float) -> float:
    """Wall time of one callback of a forwarded call."""
    assert event.forward is not None
    timeline = event.forward.callbacks(event.duration_s, event.outcome == sim.VOICEMAIL)
    return event.at + next(t for t, what in timeline if what == callback) / speed


@pytest.mark.parametrize("speed", [1, 15, 45])
def test_slower_days_keep_the_hold_and_can_suppress_a_response(speed):
    plan = sim.plan_day(7, sites(1, speed), sim.Day(speed=speed))
    hold = plan.sites[0].practice.windows.first_response_hold
    assert hold == round(45 / speed)
    suppressed = [c for c in plan.cases if c.behaviour == "through_in_hold"]
    assert len(suppressed) == (1 if hold >= 3 else 0)
    for c in suppressed:
        missed = next(e for e in plan.events if e.case == c.case and e.kind == sim.CALL)
        back = next(e for e in plan.events if e.case == c.case and e.outcome == sim.ANSWERED)
        assert missed.forward is not None and back.forward is not None
        opened = _when(missed, missed.forward.deciding, speed)
        # A person picks up within the hold; the conversation goes on past it.
        assert opened < _when(back, sim.LEG_ANSWERED, speed) < opened + hold and c.sms_steps == ()
        assert _when(back, sim.DIAL, speed) > opened + hold


def test_the_twilio_practices_calls_are_forwarded_to_the_front_desk_in_every_shape():
    plan = day_plan(seed=7, n=7)  # two Twilio practices
    twilio = {s.practice.id for s in plan.sites if s.provider == "twilio"}
    calls = [e for e in plan.events if e.kind == sim.CALL and e.practice_id in twilio]
    assert calls and all(e.forward is not None for e in calls)
    assert all(e.forward is None for e in plan.events if e.kind == sim.CALL and e.practice_id not in twilio)
    shapes = Counter((e.outcome, e.forward.front, e.forward.parent_first) for e in calls if e.forward)
    assert set(shapes) >= {
        (sim.ANSWERED, sim.FORWARD_ANSWERED, False),
        (sim.ANSWERED, sim.FORWARD_ANSWERED, True),
        (sim.MISSED, sim.FORWARD_MISSED, False),
        (sim.MISSED, sim.FORWARD_MISSED, True),
        (sim.MISSED, sim.FORWARD_MACHINE, False),
        (sim.VOICEMAIL, sim.FORWARD_MISSED, False),
    }
    assert {s for s in shapes if s[0] == sim.ANSWERED} == {s for s in shapes if s[1] == sim.FORWARD_ANSWERED}
    repeats = [e for e in calls if e.note.startswith("calls again, missed again")]
    # The repeat miss of an open case rings out in the usual order (no machine, parent last).
    assert repeats and all(e.forward and e.forward.front == sim.FORWARD_MISSED for e in repeats)
    assert not any(e.forward and e.forward.parent_first for e in repeats)
    for e in calls:
        assert e.forward is not None
        timeline = e.forward.callbacks(e.duration_s, e.outcome == sim.VOICEMAIL)
        assert timeline[0] == (0, sim.INCOMING) and [t for t, _ in timeline] == sorted(t for t, _ in timeline)
        assert (sim.RECORDED in {w for _, w in timeline}) == (e.outcome == sim.VOICEMAIL)
    for t in (e for e in plan.events if e.kind == sim.TRANSCRIPT and e.practice_id in twilio):
        call = next(e for e in calls if e.call_id == t.call_id)
        assert t.at > _when(call, sim.RECORDED, plan.day.speed)  # transcribed after the recording


def _gvoice_days(gvoice_via: str, start: float | None = None) -> list[tuple[sim.Plan, str]]:
    """(plan, the Google Voice practice) of a few days."""
    out = []
    for seed in (3, 7, 11, 13):
        plan = day_plan(seed=seed, gvoice_via=gvoice_via, start=start)
        out.append((plan, next(s.practice.id for s in plan.sites if s.provider == sim.GVOICE)))
    return out


def test_a_google_voice_practice_reading_its_emails_is_seen_only_where_google_sends_mail():
    behaviours: Counter = Counter()
    for plan, gv in _gvoice_days(sim.GV_EMAIL):
        events = [e for e in plan.events if e.practice_id == gv]
        assert not any(e.kind in (sim.TRANSCRIPT, sim.IMPORT) or e.row for e in events)
        for e in events:
            if e.kind == sim.CALL and e.outcome == sim.ANSWERED:
                assert e.event_id is None and e.opening_event_id is None  # no e-mail for an answered call
            elif e.kind == sim.CALL:
                assert e.call_id and e.call_id.endswith("@google.com>")
                assert e.event_id == sim.gvoice_email_event_id(e.call_id, gv, e.caller, e.called, e.outcome)
                assert e.event_id.startswith("google_voice:gv-") and e.opening_event_id == e.event_id
                assert (e.text is not None) == (e.outcome == sim.VOICEMAIL)  # the transcript is in the e-mail
            elif e.kind == sim.SMS:
                assert e.provider == sim.GVOICE  # the patient's text arrives as Google Voice's text e-mail
        cases = [c for c in plan.cases if c.practice_id == gv]
        calls = {e.event_id for e in events if e.kind == sim.CALL}
        assert cases and all(c.opening_event_id in calls for c in cases)
        behaviours.update(c.behaviour for c in cases)
        for c in cases:
            if c.behaviour == "calls_back_unseen":  # got through: nothing says so, the case goes on
                assert c.channel is None and c.final_state in ("ESCALATED_AND_CLOSED", "EXPIRED")
                back = [e for e in events if e.case == c.case and e.outcome == sim.ANSWERED]
                assert back and back[0].event_id is None
        assert {e.junk for e in events if e.kind == sim.JUNK} <= {"unreadable", "redelivery"}
    assert behaviours["calls_back_unseen"] and not behaviours["calls_back"]
    assert behaviours["moves"] + behaviours["protect_open"] + behaviours["protect_done"]  # transcripts: reschedules


def test_a_google_voice_practice_read_from_the_audit_log_gets_its_rows_in_batches():
    start = 1_790_000_000.0
    behaviours: Counter = Counter()
    for plan, gv in _gvoice_days(sim.GV_AUDIT, start):
        site = next(s for s in plan.sites if s.practice.id == gv)
        ctx, columns = audit_log.Practiced.of(site.practice), audit_log.header_map(list(sim.GV_AUDIT_COLUMNS))
        events = [e for e in plan.events if e.practice_id == gv]
        assert not any(e.kind == sim.TRANSCRIPT or e.text for e in events if e.kind != sim.SMS)
        assert all(e.provider == "twilio" for e in events if e.kind == sim.SMS)  # the log has no texts
        for e in (e for e in events if e.kind == sim.CALL):
            mapped = audit_log.map_row(list(e.row), columns, ctx, 0)
            assert mapped.kind == "event" and mapped.record["outcome"] == e.outcome
            assert mapped.record["event_id"] == e.event_id and mapped.record["occurred_at"] == (start + e.at) * 1000
        imports = [e.at for e in events if e.kind == sim.IMPORT]
        step = plan.day.wall(sim.GV_BATCH_S)
        assert imports == [pytest.approx(step * (k + 1)) for k in range(len(imports))]
        assert imports[-1] > max(e.at for e in events if e.row) + step - 1e-6
        junk = {e.junk: e for e in events if e.kind == sim.JUNK}
        assert audit_log.map_row(list(junk["bad_row"].row), columns, ctx, 0).kind == "dead"
        cases = [c for c in plan.cases if c.practice_id == gv]
        behaviours.update(c.behaviour for c in cases)
        assert {c.scenario for c in cases} <= {sim.NEW, sim.URGENT, sim.GENERAL}  # no transcript, no reschedule
    assert behaviours["calls_back"]  # the log has answered calls: getting through converts
    # The rows carry the call's time: another start, other event ids.
    other = day_plan(seed=3, gvoice_via=sim.GV_AUDIT, start=start + 1)
    first = _gvoice_days(sim.GV_AUDIT, start)[0][0]
    assert {c.opening_event_id for c in other.cases}.isdisjoint(
        {c.opening_event_id for c in first.cases if c.practice_id == "cedar-womens"}
    )
