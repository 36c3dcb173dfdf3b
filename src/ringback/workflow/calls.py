"""One verdict per call, from every signal of it (docs/product.md: a call is decided per
call, not per leg).

A forwarded call reaches ringback as several signals: Twilio posts the parent call's own
status, the `<Dial action>` verdict, the dialed leg's `answered` event and the
answering-machine result of that leg; RingCentral posts one notification per party (an
IVR menu, each ring-group member). Each call event names its call (`provider_call_id`),
the leg it is about (`leg_id`) and how far it speaks for the whole call (`signal`,
schemas/call_event.avsc), weakest first:

  parent   the parent call's own status (Twilio): overruled by any leg signal, whatever
           the order they arrive in
  (none)   the provider's verdict on the whole call (Dialpad, Vonage, CDR, Google Voice):
           taken as it comes, as before
  leg      the practice's side of the call: a person answered a leg (sticky: another leg
           not picking up does not make it a miss), nobody answered, voicemail
  machine  the leg `leg_id` was answered by an answering machine or a fax: not a person

`decide` keeps, per caller, the verdict of each recent call and returns the call's
outcome when this signal changes it, else None; the workflow then runs the usual path
once (MISSED / VOICEMAIL open or join the case, ANSWERED cancels a pending first
response). Pure: the state in, the verdict out.
"""

from __future__ import annotations

from collections.abc import Mapping

from ringback.workflow.state import CallerState, CallVerdict

MISSED, VOICEMAIL, ANSWERED = "MISSED", "VOICEMAIL", "ANSWERED"
PARENT, LEG, MACHINE = "parent", "leg", "machine"

CALLS_MAX, CALLS_MS = 20, 86_400_000  # the calls a caller keeps verdicts of: the last 20, one day
MACHINE_LEGS_MAX = 8
_RANK = {PARENT: 0, LEG: 2, MACHINE: 2}


def signalled(event: Mapping) -> bool:
    """Whether this call event is one signal of a call decided from several (see above)."""
    return event.get("signal") in _RANK


def decide(state: CallerState, event: Mapping, now_ms: int) -> str | None:
    """The call's outcome if this signal changed it, else None (it contradicts nothing)."""
    calls = {cid: v for cid, v in state.get("calls", {}).items() if now_ms - v["at"] < CALLS_MS}
    call_id = event["provider_call_id"]
    verdict: CallVerdict = calls.pop(
        call_id, {"outcome": None, "rank": -1, "answered_leg": None, "machine_legs": [], "at": now_ms}
    )
    before = verdict["outcome"]
    signal, leg = event.get("signal"), event.get("leg_id")
    if signal == MACHINE:
        _machine(verdict, leg)
    elif signal == LEG:
        _leg(verdict, event["outcome"], leg)
    elif verdict["rank"] < _RANK[LEG]:  # a parent status counts until a leg speaks
        verdict["outcome"], verdict["rank"] = event["outcome"], _RANK[PARENT]
    elif verdict["outcome"] == MISSED and event["outcome"] == VOICEMAIL:
        verdict["outcome"] = VOICEMAIL  # the parent recorded the fallback voicemail after the legs rang out
    verdict["at"] = now_ms
    calls[call_id] = verdict
    state["calls"] = dict(sorted(calls.items(), key=lambda kv: kv[1]["at"])[-CALLS_MAX:])
    after = verdict["outcome"]
    return after if after != before else None


def _machine(verdict: CallVerdict, leg: str | None) -> None:
    """A machine picked up `leg`: the call is missed unless a person answered another leg
    or a voicemail was left (then it stays what it is)."""
    if leg and leg not in verdict["machine_legs"]:
        verdict["machine_legs"] = (verdict["machine_legs"] + [leg])[-MACHINE_LEGS_MAX:]
    person_elsewhere = verdict["outcome"] == ANSWERED and verdict["answered_leg"] not in (None, leg)
    if verdict["outcome"] != VOICEMAIL and not person_elsewhere:
        verdict["outcome"], verdict["answered_leg"] = MISSED, None
    verdict["rank"] = max(verdict["rank"], _RANK[MACHINE])


def _leg(verdict: CallVerdict, outcome: str, leg: str | None) -> None:
    if outcome == ANSWERED and leg is not None and leg in verdict["machine_legs"]:
        outcome = MISSED  # the leg's "answer" was its voicemail or a fax
    before = verdict["outcome"] if verdict["rank"] >= _RANK[LEG] else None
    if before == ANSWERED and outcome != ANSWERED:
        pass  # a person answered: other legs not picking up, or a later transfer, change nothing
    elif before == VOICEMAIL and outcome == MISSED:
        pass  # the voicemail was left: a leg that rang out says nothing more
    else:
        verdict["outcome"] = outcome
        verdict["answered_leg"] = leg if outcome == ANSWERED else None
    verdict["rank"] = max(verdict["rank"], _RANK[LEG])
