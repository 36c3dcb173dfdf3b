"""Consent words, frequency caps and quiet hours (pure rules)."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from ringback.domain import consent

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
