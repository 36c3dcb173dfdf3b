"""Consent words, frequency caps, quiet hours and the one SMS decision both processes make (pure rules)."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from ringback.domain import consent
from tests.workflow.harness import practice as maple

CHI = "America/Chicago"


def ms(y, mo, d, h, mi, tz=CHI) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        " Stop. ",
        "STOPALL",
        "unsubscribe",
        "END",
        "quit",
        "CANCEL",
        "revoke",
        "OPTOUT",
        "opt out",
        "please stop texting me",
        "Don't text me again",
        "Remove me from this list",
        "no more messages please",
        "opt me out",
    ],
)
def test_opt_out(body):
    assert consent.sms_intent(body) == consent.OPT_OUT


@pytest.mark.parametrize("body", ["START", "unstop", "Yes"])
def test_opt_in(body):
    assert consent.sms_intent(body) == consent.OPT_IN


@pytest.mark.parametrize(
    "body, intent",
    [
        ("HELP", consent.HELP),
        ("Can I book for Tuesday?", None),
        ("I can't stop coughing, please call", None),
        ("", None),
        (None, None),
        ("yes please book me", None),
    ],
)
def test_other_replies(body, intent):
    assert consent.sms_intent(body) == intent


def test_caps_count_the_last_day_and_week():
    now = ms(2026, 11, 26, 12, 0)
    hour = 3_600_000
    assert consent.cap_blocks([], now, 1, 3) is None
    assert "24 h" in consent.cap_blocks([now - hour], now, 1, 3)
    assert consent.cap_blocks([now - 25 * hour], now, 1, 3) is None
    three = [now - 2 * consent.DAY_MS, now - 3 * consent.DAY_MS, now - 4 * consent.DAY_MS]
    assert "7 days" in consent.cap_blocks(three, now, 1, 3)
    assert consent.cap_blocks(three[:2] + [now - 8 * consent.DAY_MS], now, 1, 3) is None
    assert consent.prune_sent(three + [now - 8 * consent.DAY_MS], now) == three


def test_fcc_profile_is_never_looser():
    assert consent.caps_for(3, 6, True) == (1, 3)
    assert consent.caps_for(0, 2, True) == (0, 2)
    assert consent.caps_for(3, 6, False) == (3, 6)


@pytest.mark.parametrize(
    "now, expected",
    [
        (ms(2026, 11, 26, 12, 0), ms(2026, 11, 26, 12, 0)),  # open: now
        (ms(2026, 11, 26, 22, 30), ms(2026, 11, 27, 8, 0)),  # 22:30 -> 08:00 next day
        (ms(2026, 11, 26, 6, 15), ms(2026, 11, 26, 8, 0)),  # early morning -> 08:00 today
        (ms(2026, 11, 26, 21, 0), ms(2026, 11, 27, 8, 0)),  # the end is exclusive
        (ms(2026, 3, 7, 23, 0), ms(2026, 3, 8, 8, 0)),  # across the DST change
    ],
)
def test_quiet_hours(now, expected):
    assert consent.next_allowed_send(now, CHI, time(8), time(21)) == expected


def test_quiet_hours_window_across_midnight():
    # A night-shift practice that allows 20:00-02:00.
    assert consent.next_allowed_send(ms(2026, 11, 26, 1, 0), CHI, time(20), time(2)) == ms(2026, 11, 26, 1, 0)
    assert consent.next_allowed_send(ms(2026, 11, 26, 12, 0), CHI, time(20), time(2)) == ms(2026, 11, 26, 20, 0)


# ------------------------------------------------------------------ the one decision (both processes)
NUMBER = "+14155550123"
NOON = ms(2026, 11, 24, 12, 0)
BODY = "Maple Family Practice: sorry we missed your call. Reply STOP to opt out."


def decide(practice=None, now=NOON, **kw):
    args = {"recipient": NUMBER, "body": BODY, "opted_out": False, "sent_at_ms": [], **kw}
    return consent.sms_decision(practice or maple(), now, **args)


def test_an_sms_may_go_now_inside_the_sms_hours():
    assert decide() == (None, NOON)


def test_quiet_hours_never_refuse_they_move_the_send_time():
    assert decide(now=ms(2026, 11, 24, 22, 30)) == (None, ms(2026, 11, 25, 8, 0))


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"recipient": "+13125550199"}, consent.Refusal.BLOCKED_NUMBER),
        ({"deceased": True}, consent.Refusal.DECEASED),
        ({"opted_out": True}, consent.Refusal.OPTED_OUT),
        ({"opted_out": True, "confirmation": True, "already_confirmed": True}, consent.Refusal.ALREADY_CONFIRMED),
    ],
)
def test_each_fixed_reason(kw, reason):
    assert decide(**kw).refused == reason


def test_reasons_in_order_blocked_number_first_then_deceased_then_opt_out():
    assert decide(recipient="+13125550199", deceased=True, opted_out=True).refused == "blocked number"
    assert decide(deceased=True, opted_out=True).refused == "deceased patient"
    assert decide(opted_out=True, sent_at_ms=[NOON - 1000] * 9).refused == "opted out"


def test_the_frequency_caps_of_the_practice():
    three_a_day = maple(sms_caps={"per_day": 3, "per_week": 6})
    assert decide(three_a_day, sent_at_ms=[NOON - 3_600_000] * 2).refused is None
    assert decide(three_a_day, sent_at_ms=[NOON - 3_600_000] * 3).refused == "frequency cap: 3 SMS in 24 h (cap 3)"
    week = [NOON - d * consent.DAY_MS for d in range(1, 7)]
    assert decide(three_a_day, sent_at_ms=week).refused == "frequency cap: 6 SMS in 7 days (cap 6)"


def test_caps_are_counted_at_the_send_time_not_when_deferred():
    # A confirmation went out at 03:00 (it ignores quiet hours); at 02:30 the next night an
    # SMS would go at 08:00, 29 h after it: the daily cap of 1 has room then.
    one_a_day = maple(sms_caps={"per_day": 1, "per_week": 3})
    night = ms(2026, 11, 25, 2, 30)
    assert decide(one_a_day, night, sent_at_ms=[ms(2026, 11, 24, 3, 0)]) == (None, ms(2026, 11, 25, 8, 0))
    assert decide(one_a_day, night, sent_at_ms=[ms(2026, 11, 24, 9, 0)]).refused.startswith("frequency cap: 1 SMS")


def test_the_fcc_profile_is_never_looser_and_checks_the_body():
    fcc = maple(sms_caps={"per_day": 5, "per_week": 9, "fcc_healthcare_exemption": True})
    assert decide(fcc).refused is None
    assert decide(fcc, sent_at_ms=[NOON - 3_600_000]).refused == "frequency cap: 1 SMS in 24 h (cap 1)"
    assert decide(fcc, body="x" * 161 + " Maple Family Practice STOP").refused == (
        "FCC profile: 188 characters (at most 160)"
    )
    assert decide(fcc, body="Sorry we missed you. Reply STOP").refused == (
        "FCC profile: the message does not name the practice"
    )
    assert decide(maple(), body="x" * 300).refused is None  # without the profile the body is free


def test_the_opt_out_confirmation_goes_once_at_once_ignoring_caps_and_quiet_hours():
    night = ms(2026, 11, 24, 23, 0)
    capped = [night - 1000] * 9
    assert decide(now=night, opted_out=True, confirmation=True, sent_at_ms=capped) == (None, night)
    assert decide(opted_out=True, confirmation=True, already_confirmed=True).refused == (
        "opt-out already confirmed once"
    )
    # Opted back in before the confirmation went: it still goes (it answers the patient's own text).
    assert decide(confirmation=True, already_confirmed=True) == (None, NOON)
    assert decide(recipient="+13125550199", opted_out=True, confirmation=True).refused == "blocked number"


def test_staff_read_a_refusal_as_a_sentence_outcome_records_keep_it_short():
    assert consent.for_staff(consent.Refusal.OPTED_OUT) == "the caller opted out of SMS"
    assert consent.for_staff(consent.Refusal.DECEASED) == "the patient record is marked deceased"
    assert consent.for_staff("frequency cap: 1 SMS in 24 h (cap 1)") == "frequency cap: 1 SMS in 24 h (cap 1)"


def test_keywords_are_whole_texts():
    assert consent.is_keyword(" stop. ") and consent.is_keyword("START")
    assert not consent.is_keyword("please stop texting me")
