"""Consent, frequency caps and quiet hours for patient SMS (SPEC section 6).

Pure functions: text, times and settings in, decisions out. The stream workflow
uses them to choose "SMS or staff task instead"; the SMS sink applies them again
as the last line of defence.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

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


# ------------------------------------------------------------------ frequency caps
FCC_HEALTHCARE_EXEMPTION = {"per_day": 1, "per_week": 3, "max_chars": 160}
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


def caps_for(per_day: int, per_week: int, fcc_healthcare_exemption: bool) -> tuple[int, int]:
    """The effective caps: the FCC profile is never looser than the practice's own."""
    if fcc_healthcare_exemption:
        return (min(per_day, FCC_HEALTHCARE_EXEMPTION["per_day"]), min(per_week, FCC_HEALTHCARE_EXEMPTION["per_week"]))
    return per_day, per_week


def cap_blocks(sent_at_ms: list[int], now_ms: int, per_day: int, per_week: int) -> str | None:
    """Why one more SMS to this number would break a cap, or None if it may go."""
    last_day = sum(1 for t in sent_at_ms if now_ms - t < DAY_MS)
    last_week = sum(1 for t in sent_at_ms if now_ms - t < WEEK_MS)
    if last_day >= per_day:
        return f"frequency cap: {last_day} SMS in 24 h (cap {per_day})"
    if last_week >= per_week:
        return f"frequency cap: {last_week} SMS in 7 days (cap {per_week})"
    return None


def prune_sent(sent_at_ms: list[int], now_ms: int) -> list[int]:
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
