"""Consent, frequency caps and quiet hours for patient SMS (docs/product.md, "Rules for every workflow").

Pure functions: text, times and settings in, decisions out. `sms_decision` is the one
place that decides whether a patient SMS may go and when: the stream workflow asks it
to choose "SMS or staff task instead", the SMS sink asks it again as the last line of
defence, each with its own record of consent and of the texts sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from ringback.domain.practice import Practice

OPT_OUT = "OPT_OUT"
OPT_IN = "OPT_IN"
HELP = "HELP"

# Carrier/CTIA keywords (the whole message, any case, surrounding punctuation ignored).
OPT_OUT_KEYWORDS = {
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "END",
    "QUIT",
    "CANCEL",
    "REVOKE",
    "OPTOUT",
    "OPT-OUT",
    "OPT OUT",
    "STOP ALL",
}
OPT_IN_KEYWORDS = {"START", "UNSTOP", "YES"}
HELP_KEYWORDS = {"HELP", "INFO"}

# Since April 2025 consent may be revoked "by any reasonable means": sentences count too.
_SENTENCE_OPT_OUT = re.compile(
    r"\b(?:"
    r"stop\s+(?:texting|messaging|sending|contacting|these|this|the\s+(?:texts|messages))"
    r"|(?:don'?t|do\s+not|never)\s+(?:text|message|contact|sms)\s+me"
    r"|no\s+more\s+(?:texts|messages|sms)"
    r"|(?:unsubscribe|remove|take)\s+me(?:\s+(?:from|off)\b)?"
    r"|opt\s*(?:me\s+)?out"
    r"|leave\s+me\s+alone"
    r")\b",
    re.IGNORECASE,
)


def _normalise(body: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s-]", "", body)).strip().upper()


def sms_intent(body: str | None) -> str | None:
    """What an inbound SMS says about consent: OPT_OUT, OPT_IN, HELP or None (a reply)."""
    if not body:
        return None
    word = _normalise(body)
    if word in OPT_OUT_KEYWORDS:
        return OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return OPT_IN
    if word in HELP_KEYWORDS:
        return HELP
    if _SENTENCE_OPT_OUT.search(body):
        return OPT_OUT
    return None


def is_keyword(body: str) -> bool:
    """Whether the whole text is a consent keyword (STOP, START, ...): carriers confirm
    those themselves, a sentence opt-out gets our one confirmation."""
    return _normalise(body) in OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS


# ------------------------------------------------------------------ frequency caps
FCC_HEALTHCARE_EXEMPTION = {"per_day": 1, "per_week": 3, "max_chars": 160}
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


def caps_for(per_day: int, per_week: int, fcc_healthcare_exemption: bool) -> tuple[int, int]:
    """The effective caps: the FCC profile is never looser than the practice's own."""
    if fcc_healthcare_exemption:
        return (min(per_day, FCC_HEALTHCARE_EXEMPTION["per_day"]), min(per_week, FCC_HEALTHCARE_EXEMPTION["per_week"]))
    return per_day, per_week


def cap_blocks(sent_at_ms: Sequence[int], now_ms: int, per_day: int, per_week: int) -> str | None:
    """Why one more SMS to this number would break a cap, or None if it may go."""
    last_day = sum(1 for t in sent_at_ms if now_ms - t < DAY_MS)
    last_week = sum(1 for t in sent_at_ms if now_ms - t < WEEK_MS)
    if last_day >= per_day:
        return f"frequency cap: {last_day} SMS in 24 h (cap {per_day})"
    if last_week >= per_week:
        return f"frequency cap: {last_week} SMS in 7 days (cap {per_week})"
    return None


def prune_sent(sent_at_ms: Sequence[int], now_ms: int) -> list[int]:
    """Keep only the send times a cap can still count."""
    return [t for t in sent_at_ms if now_ms - t < WEEK_MS]


# ------------------------------------------------------------------ quiet hours
def next_allowed_send(now_ms: int, time_zone: str, start: time, end: time) -> int:
    """`now_ms` if a patient SMS may go now, else the next start of the allowed window
    (practice local time; `start` < `end` is a day window, otherwise it wraps midnight)."""
    zone = ZoneInfo(time_zone)
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    t = local.time()
    allowed = (start <= t < end) if start < end else (t >= start or t < end)
    if allowed:
        return now_ms
    day = local.date() if t < start else local.date() + timedelta(days=1)
    opening = datetime.combine(day, start, zone)
    return int(opening.timestamp() * 1000)


def fcc_profile_violation(body: str, practice_name: str, max_chars: int | None = None) -> str | None:
    """Why an SMS body falls outside the FCC healthcare-exemption profile (at most 160
    characters, names the practice, tells how to opt out), or None if it fits."""
    limit = max_chars or FCC_HEALTHCARE_EXEMPTION["max_chars"]
    if len(body) > limit:
        return f"FCC profile: {len(body)} characters (at most {limit})"
    if practice_name.casefold() not in body.casefold():
        return "FCC profile: the message does not name the practice"
    if not re.search(r"\bSTOP\b", body, re.IGNORECASE):
        return "FCC profile: the message has no opt-out instruction (Reply STOP)"
    return None


# ------------------------------------------------------------------ the decision
class Refusal:
    """Why a patient SMS may not go, where the reason is fixed (caps and the FCC profile
    say more: their reasons carry the counts and the limit). Plain strings: they go into
    records and tables as they are."""

    BLOCKED_NUMBER = "blocked number"
    DECEASED = "deceased patient"
    OPTED_OUT = "opted out"
    ALREADY_CONFIRMED = "opt-out already confirmed once"


# Outcome records keep the short reason; the staff task that replaces an SMS says it in a sentence.
_FOR_STAFF: dict[str, str] = {
    Refusal.DECEASED: "the patient record is marked deceased",
    Refusal.OPTED_OUT: "the caller opted out of SMS",
}


def for_staff(reason: str) -> str:
    """A refusal as staff read it on the task that replaces the SMS."""
    return _FOR_STAFF.get(reason, reason)


class SmsDecision(NamedTuple):
    refused: str | None  # why the SMS may not go (a Refusal, or a cap / FCC reason), None if it may
    send_at: int  # when it may go: now, or the end of the quiet hours


def sms_decision(
    practice: Practice,
    now_ms: int,
    *,
    recipient: str,
    body: str,
    opted_out: bool,
    sent_at_ms: Sequence[int],
    confirmation: bool = False,
    already_confirmed: bool = False,
    deceased: bool = False,
) -> SmsDecision:
    """Whether a patient SMS may go, and when.

    In this order: the practice's blocked numbers; the opt-out confirmation (one text
    after an opt-out, `already_confirmed` says it went; it answers the patient's own
    text, so caps and quiet hours do not apply); a deceased patient; an opt-out; the
    frequency caps (`sent_at_ms`: the send times of this number, counted at the send
    time; the FCC profile is never looser) and the FCC profile of the body. Quiet hours
    never refuse: they only move `send_at` to the next allowed local time."""
    if recipient in practice.blocked_numbers:
        return SmsDecision(Refusal.BLOCKED_NUMBER, now_ms)
    if confirmation:
        if opted_out and already_confirmed:
            return SmsDecision(Refusal.ALREADY_CONFIRMED, now_ms)
        return SmsDecision(None, now_ms)
    send_at = next_allowed_send(now_ms, practice.time_zone, practice.quiet_hours.start, practice.quiet_hours.end)
    if deceased:
        return SmsDecision(Refusal.DECEASED, send_at)
    if opted_out:
        return SmsDecision(Refusal.OPTED_OUT, send_at)
    caps = practice.sms_caps
    per_day, per_week = caps_for(caps.per_day, caps.per_week, caps.fcc_healthcare_exemption)
    capped = cap_blocks(sent_at_ms, send_at, per_day, per_week)
    if capped:
        return SmsDecision(capped, send_at)
    if caps.fcc_healthcare_exemption:
        violation = fcc_profile_violation(body, practice.name)
        if violation:
            return SmsDecision(violation, send_at)
    return SmsDecision(None, send_at)
