"""Which scenario a missed call is (docs/product.md, "The four scenarios"). Pure: values in, decision out.

Order of the decision (each step only when the previous did not decide):

1. ignored: the caller is one of the practice's own numbers, or a blocked number
   (the workflow counts these and opens no case);
2. NEW_PATIENT: the caller is not in the practice's patient data. Flags, appointments
   or a voicemail of an unknown number never make it clinical ("never route a
   clinical task for an unknown number");
3. URGENT_EXISTING: a known patient with an active urgency flag or a
   callback-requested flag;
4. RESCHEDULE: a known patient whose voicemail transcript asks to reschedule/cancel
   (negations such as "not cancelling" do not count);
5. GENERAL_INQUIRY: every other known patient.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NEW_PATIENT = "NEW_PATIENT"
URGENT_EXISTING = "URGENT_EXISTING"
RESCHEDULE = "RESCHEDULE"
GENERAL_INQUIRY = "GENERAL_INQUIRY"
SCENARIOS = (NEW_PATIENT, URGENT_EXISTING, RESCHEDULE, GENERAL_INQUIRY)

OPENING_OUTCOMES = {"MISSED", "VOICEMAIL"}

# Why a call opens no case (metric label values: no PHI).
IGNORED_OWN_NUMBER = "own_number"
IGNORED_BLOCKED = "blocked_number"


def opens_case(event: Mapping) -> bool:
    """A missed inbound call (including one that ended in voicemail or an answering
    machine, decided by the gateway per provider) opens or joins a case."""
    return (
        event["event_type"] == "CALL" and event["direction"] == "INBOUND" and event.get("outcome") in OPENING_OUTCOMES
    )


def answered_inbound(event: Mapping) -> bool:
    """The caller called again and reached staff (cancels a pending first response)."""
    return event["event_type"] == "CALL" and event["direction"] == "INBOUND" and event.get("outcome") == "ANSWERED"


def ignore_reason(caller: str, own_numbers: Iterable[str], blocked_numbers: Iterable[str]) -> str | None:
    """Why a call from `caller` is not a patient call at all, or None."""
    if caller in set(own_numbers):
        return IGNORED_OWN_NUMBER
    if caller in set(blocked_numbers):
        return IGNORED_BLOCKED
    return None


# ------------------------------------------------------------------ urgency
URGENT_FLAG_CODES = {
    "callback-requested",
    "callback_requested",
    "urgent",
    "urgent-callback",
    "refill-request",
    "open-refill-request",
    "clinical-urgent",
    "nurse-callback",
}
URGENT_PRIORITIES = {"PH"}  # FHIR flag-priority: high


def is_urgent_flag(flag: Mapping) -> bool:
    """An active flag that asks for a clinical callback: callback requested (nurse
    line), an urgency code (open refill request, urgent), or high priority."""
    if flag.get("status") != "active":
        return False
    if flag.get("callback_requested"):
        return True
    if str(flag.get("code") or "").strip().lower() in URGENT_FLAG_CODES:
        return True
    return str(flag.get("priority") or "").upper() in URGENT_PRIORITIES


def urgent_flags(flags: Iterable[Mapping]) -> list[Mapping]:
    """Active urgency flags, callback requests first, then by most recent update."""
    found = [f for f in flags if is_urgent_flag(f)]
    return sorted(found, key=lambda f: (not f.get("callback_requested"), -(f.get("updated_at") or 0)))


def urgency_reason(flag: Mapping) -> str:
    """What the clinical staff see as the reason (the flag's own display text or code)."""
    if flag.get("display"):
        return str(flag["display"])[:120]
    if flag.get("callback_requested"):
        return "callback requested"
    return str(flag.get("code") or "urgent flag")[:60]


# ------------------------------------------------------------------ reschedule intent
_INTENT = re.compile(
    r"\b(?:"
    r"re-?schedul\w*"  # reschedule, rescheduling, re-schedule
    r"|cancel(?:s|led|ed|ling|ing|lation|ations)?"  # cancel, cancelling, cancellation
    r"|(?:change|changing|move|moving|switch|switching|push|pushing|shift)\s+"
    r"(?:(?:my|the|our|his|her|their|this|that|an?)\s+)?(?:\w+\s+)?(?:appointment|appt|visit|booking)s?"
    r"|(?:appointment|appt|visit)\s+(?:changed|moved)"
    r"|(?:a\s+|some\s+)?(?:different|another|other|new|later|earlier)\s+(?:time|day|date|slot)s?"
    r"|postpon\w*"
    r")\b",
    re.IGNORECASE,
)
# Phrases whose own negation is the intent ("I can't make it"): never negated again.
_CANNOT_MAKE_IT = re.compile(
    r"\b(?:can'?t|cannot|can\s+not|won'?t\s+be\s+able\s+to|unable\s+to|not\s+able\s+to)\s+"
    r"(?:make|come|attend|keep)\b(?:\s+(?:it|in|to|my|the|our|this|that|appointment|appt|visit))*",
    re.IGNORECASE,
)
_NEGATORS = {
    "not",
    "no",
    "never",
    "dont",
    "don't",
    "doesnt",
    "doesn't",
    "didnt",
    "didn't",
    "isnt",
    "isn't",
    "arent",
    "aren't",
    "wasnt",
    "wasn't",
    "wont",
    "won't",
    "without",
    "nor",
    "neither",
    "cant",
    "can't",
    "cannot",
    "shouldnt",
    "shouldn't",
    "needn't",
    "neednt",
}
_CLAUSE_BREAK = re.compile(r"[.;!?,:]|\b(?:but|however|though|although|instead|and\s+then|so)\b", re.IGNORECASE)
_NEGATION_WINDOW = 4  # words between a negator and the intent word


def _negated(before: str) -> bool:
    """Is there a negator within a few words before the intent, in the same clause?"""
    clause = _CLAUSE_BREAK.split(before)[-1]
    words = re.findall(r"[a-z']+", clause.lower().replace("’", "'"))
    window = words[-_NEGATION_WINDOW:]
    return any(w in _NEGATORS or w.endswith("n't") for w in window)


def reschedule_intent(transcript: str | None) -> bool:
    """Does the voicemail ask to reschedule, move, change or cancel an appointment?

    "Reschedule", "change/move my appointment", "cancel", "a different time",
    "postpone", "I can't make it" and their variants count; a negated mention
    ("I'm not cancelling", "no need to reschedule", "I don't want to change my
    appointment") does not. Any one un-negated mention decides.
    """
    if not transcript:
        return False
    text = transcript.replace("’", "'")
    if _CANNOT_MAKE_IT.search(text):
        return True
    for match in _INTENT.finditer(text):
        if not _negated(text[: match.start()]):
            return True
    return False


# ------------------------------------------------------------------ decision
@dataclass(frozen=True)
class Classification:
    scenario: str
    reason: str  # for staff and BI: no PHI, no clinical detail beyond the urgency label
    urgent_flag: Mapping | None = None


def classify(patient: Mapping | None, flags: Iterable[Mapping] = (), transcript: str | None = None) -> Classification:
    """The scenario of a missed call from the joined tables and the call (see module doc).

    `patient`: the Patient record for practice+caller (None: unknown number);
    `flags`: the caller's Flag records; `transcript`: the voicemail text, if any.
    """
    if patient is None:
        return Classification(NEW_PATIENT, "missed call from a number not in the patient records")
    flagged = urgent_flags(flags)
    if flagged:
        return Classification(
            URGENT_EXISTING, f"known patient with an active flag: {urgency_reason(flagged[0])}", flagged[0]
        )
    if reschedule_intent(transcript):
        return Classification(RESCHEDULE, "voicemail asks to reschedule or cancel an appointment")
    if transcript:
        return Classification(GENERAL_INQUIRY, "known patient, voicemail without urgency or reschedule intent")
    return Classification(GENERAL_INQUIRY, "known patient, no urgency flag, no voicemail")
