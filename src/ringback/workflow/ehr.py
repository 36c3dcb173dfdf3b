"""EHR join data of a phone: the patient, appointments and flags from the compacted topics.

Kept under `e|<practice>|<phone>` in the caller's partition (appointments and flags are
keyed `practice|phone|id` but produced into the partition of `practice|phone`), so the
workflow joins a call with them without leaving the partition. Only the fields the
rules read are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from ringback.workflow.run import Run
from ringback.workflow.state import Appointment, Ehr, Flag, Patient

# Appointment statuses (FHIR) that hold a slot, those of a confirmed slot (a conversion:
# workflow/cases.py), and those still to come.
BOOKED = frozenset({"booked", "pending", "proposed", "arrived", "checked-in", "fulfilled", "waitlist"})
CONFIRMED = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
UPCOMING = frozenset({"booked", "pending", "proposed", "arrived", "checked-in"})

KEEP_PAST_MS = 30 * 86_400_000  # appointments long past are of no use to any rule


def load(run: Run, key: str) -> Ehr:
    stored: Ehr | None = run.tx.get(key)
    return stored or {"patient": None, "appointments": {}, "flags": {}}


def save(run: Run, key: str, ehr: Ehr) -> None:
    """Write the record, or delete it once nothing is left in it."""
    if ehr["patient"] is None and not ehr["appointments"] and not ehr["flags"]:
        if run.tx.get(key) is not None:
            run.tx.delete(key)
    else:
        run.tx.set(key, ehr)


# Each projection keeps the fields its record type names, in that order.
def patient(record: Mapping) -> Patient:
    return cast(Patient, {k: record.get(k) for k in Patient.__annotations__})


def flag(record: Mapping) -> Flag:
    return cast(Flag, {k: record.get(k) for k in Flag.__annotations__})


def appointment(record: Mapping) -> Appointment:
    return cast(Appointment, {k: record.get(k) for k in Appointment.__annotations__})


def put_appointment(ehr: Ehr, appointment_id: str, new: Appointment, now_ms: int) -> None:
    ehr["appointments"][appointment_id] = new
    horizon = now_ms - KEEP_PAST_MS
    ehr["appointments"] = {k: v for k, v in ehr["appointments"].items() if (v.get("start") or 0) >= horizon}


def next_appointment(ehr: Ehr, now_ms: int) -> Appointment | None:
    """The patient's next upcoming appointment, if any."""
    upcoming = [
        a for a in ehr["appointments"].values() if a.get("status") in UPCOMING and (a.get("start") or 0) > now_ms
    ]
    return min(upcoming, key=lambda a: a["start"]) if upcoming else None
