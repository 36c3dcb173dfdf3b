"""Carries out action commands exactly once as the patient sees it (no Faust in here).

The Faust topology (`sinks/app.py`) feeds this class one event at a time
and gives it the state tables (changelog-backed Faust tables there, dicts in unit
tests) and `persist`, a write that returns only once the changelog record is
acknowledged by the broker.

Idempotency (sent-log keyed by action_id, see docs/sinks.md):
  1. Before every API call the entry `ATTEMPTING` (attempt number, wall time) is
     persisted: durably, *before* the request leaves.
  2. The result is persisted (`SENT` with the SID, `RETRY` after a refusal that
     created nothing, `SUPPRESSED`, `FAILED`, `DEAD_LETTERED`) before the event is
     acknowledged, so the offset commit always follows the sent-log. A final result's
     outcome record (and dead letter) is acknowledged by the broker *before* the final
     entry is written (`_finish`): a crash in between repeats the outcome, under the
     same `outcome_id`, instead of losing it behind an entry that says "done".
  3. A redelivered action whose entry is final is skipped. One found `ATTEMPTING`
     (crash, rebalance, timeout, 5xx) may have gone out: the SMS sink first waits for
     any request still in flight elsewhere to finish, then looks the message up in
     Twilio's Messages list (To, From, DateSent, same body, created since the first
     attempt) and resends only when it is not there.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type

from ringback.clock import Clock
from ringback.config.secrets import read_secret
from ringback.config.settings import Settings
from ringback.domain import consent as rules
from ringback.domain.practice import Practice
from ringback.domain.recipes import ACK_SMS, FIRST_SMS, RESCHEDULE_SMS, task_notice
from ringback.domain.tasks import PENDING, add_reply, apply_update, hold_update, new_task
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.observability.metrics import DEAD_LETTERS as ALL_DEAD_LETTERS
from ringback.observability.metrics import FIRST_RESPONSE_BUCKETS, child, practice_label
from ringback.sinks import records as rec
from ringback.sinks.channels.twilio_sms import TwilioSms, body_digest, status_callback_url
from ringback.sinks.retry import OptedOut, Permanent, PracticeThrottle, RetryPolicy, Transient

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")

ACTIONS_DONE = Counter(
    "ringback_sink_actions_total", "Actions carried out, by kind and result", ["kind", "result", "practice"]
)
RETRIES = Counter("ringback_sink_retries_total", "Failed attempts that will be retried, by sink", ["sink"])
DEAD_LETTERS = Counter("ringback_sink_dead_letters_total", "Actions sent to the dead-letter topic, by kind", ["kind"])
DUPLICATES = Counter(
    "ringback_sink_duplicates_skipped_total", "Redelivered actions skipped because the sent-log has them", ["kind"]
)
LOOKUPS = Counter(
    "ringback_sink_sms_lookups_total", "Twilio message look-ups after an ambiguous attempt, by result", ["result"]
)
CONSENT = Counter("ringback_sink_consent_changes_total", "Opt-outs and opt-ins recorded", ["change", "source"])
CALL_SECONDS = Histogram(
    "ringback_sink_call_seconds",
    "Duration of one external call, by sink",
    ["sink"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FIRST_RESPONSE = Histogram(
    "ringback_first_response_latency_seconds",
    "Missed call reported at the gateway -> first patient SMS of its case sent to "
    "Twilio (not counting SMS deferred for quiet hours)",
    ["scenario", "practice"],
    buckets=FIRST_RESPONSE_BUCKETS,
)
SMS_DEFERRED = Counter(
    "ringback_sink_sms_deferred_total", "Patient SMS deferred to the end of the quiet hours", ["scenario", "practice"]
)
FIRST_RESPONSE_STEPS = frozenset({FIRST_SMS, ACK_SMS, RESCHEDULE_SMS})

# The deferred table also holds, per number, the ids of its deferred SMS (the answered-call
# cancel looks there instead of scanning the table). Action ids are `<practice_id>:...` and
# practice ids are [a-z0-9-]: no action id starts with this prefix.
INDEX_PREFIX = "@by-caller|"


def deferred_index_key(practice_id: str, number: str) -> str:
    return f"{INDEX_PREFIX}{practice_id}|{number}"


def is_index_key(key) -> bool:
    return isinstance(key, str) and key.startswith(INDEX_PREFIX)


SCENARIO_ROLE = {
    "NEW_PATIENT": "scheduling_coordinator",
    "URGENT_EXISTING": "nurse",
    "RESCHEDULE": "scheduling_coordinator",
    "GENERAL_INQUIRY": "admin_team",
}
SETTLE_MARGIN_S = 2.0


Write = tuple[str, str, dict | list | None]  # table, key, value (None: delete)


class Effects(Protocol):
    async def persist(self, table: str, key: str, value: dict | list | None) -> None: ...
    async def persist_all(self, writes: list[Write]) -> None:
        """Several writes at once, returning when the broker acknowledged all of them."""

    async def outcome(self, key: bytes, record: dict) -> None:
        """Returns once the broker acknowledged the record."""

    async def dead_letter(self, key: bytes, record: dict) -> None:
        """Returns once the broker acknowledged the record."""


@dataclass
class Tables:
    sent_log: MutableMapping  # action_id -> entry (records.ATTEMPTING, SENT, ...)
    consent: MutableMapping  # practice_id|number -> {"state": OUT|IN, "at", "source", "confirmed_at"}
    sms_history: MutableMapping  # practice_id|number -> [sent_at_ms, ...] (for the caps)
    # action_id -> {"action", "caller", "due_at", "partition"}; and, per number, the ids of its
    # deferred SMS: deferred_index_key(practice_id, recipient) -> {"action_ids": [...]}
    deferred: MutableMapping
    tasks: MutableMapping  # task_id -> task (domain/tasks.py; its changelog is the tasks topic)


class Stop(Exception):
    """Internal: a terminal result reached inside the retry loop."""

    def __init__(self, result: str) -> None:
        self.result = result


class ActionExecutor:
    def __init__(
        self,
        env: Settings,
        tables: Tables,
        effects: Effects,
        directory: PracticeDirectory,
        clock: Clock,
        policy: RetryPolicy | None = None,
        sms: TwilioSms | None = None,
        slack=None,
        mailer=None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.env = env
        self.t = tables
        self.fx = effects
        self.directory = directory
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.sms = sms
        self.slack = slack
        self.mailer = mailer
        self.sleep = sleep
        self.wall = wall
        # Twilio calls in flight per practice, and a practice's pause after a 429.
        self.throttle = PracticeThrottle(env.ringback_sink_practice_concurrency, sleep, wall)
        self._inflight: set[str] = set()
        # Partitions whose deferred entries were checked against the by-number index since
        # this process started (entries written before the index existed get indexed once).
        self._indexed: set[int | None] = set()

    # ================================================================== entry points
    async def handle_action(self, key: bytes | None, action: dict, partition: int) -> str:
        aid, kind = action["action_id"], action["kind"]
        if aid in self._inflight:
            child(DUPLICATES, kind).inc()
            return "IN_FLIGHT"
        entry = self.t.sent_log.get(aid)
        if entry and (entry["state"] in rec.FINAL or entry["state"] == rec.DEFERRED):
            child(DUPLICATES, kind).inc()
            log.debug("action %s already %s: skipped", aid, entry["state"])
            return "DUPLICATE"
        self._inflight.add(aid)
        try:
            practice = self.directory.by_id(action["practice_id"])
            caller = caller_of(key, action)
            if practice is None:
                return await self._dead(action, "unknown practice (not in the config topic)", entry)
            if kind == "SEND_SMS":
                return await self._sms(action, practice, caller, partition, entry)
            if kind == "CREATE_TASK":
                return await self._create_task(action, practice, caller)
            return await self._notify(action, practice, caller, entry)
        finally:
            self._inflight.discard(aid)

    async def fire_due(self, partition: int) -> int:
        """Send the deferred SMS of one partition whose time has come (a TICK). Returns
        how many were due. Only entries of `partition` are touched: a table write goes
        to the changelog partition of the event being processed."""
        now = self.clock.now_ms()
        due = [
            (aid, d)
            for aid, d in list(self.t.deferred.items())
            if d and not is_index_key(aid) and d.get("partition") == partition and d["due_at"] <= now
        ]
        # The 08:00 burst: one number's SMS in order, different numbers at once (bounded like
        # the lanes). The tasks inherit the TICK as current event: writes go to `partition`.
        by_number: dict[str, list[tuple[str, dict]]] = {}
        for aid, d in sorted(due, key=lambda x: x[1]["due_at"]):
            a = d.get("action") or {}
            by_number.setdefault(f"{a.get('practice_id')}|{a.get('recipient')}", []).append((aid, d))
        room = asyncio.Semaphore(self.env.ringback_sink_concurrency)

        async def fire_number(entries: list[tuple[str, dict]]) -> None:
            async with room:
                for aid, d in entries:
                    await self._fire_one(aid, d, partition)

        results = await asyncio.gather(*(fire_number(e) for e in by_number.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(due)

    async def _fire_one(self, aid: str, d: dict, partition: int) -> None:
        if aid in self._inflight:
            return
        entry = self.t.sent_log.get(aid)
        if entry and entry["state"] in rec.FINAL:
            del self.t.deferred[aid]
            await self._unindex(d.get("action"), aid)
            return
        self._inflight.add(aid)
        try:
            action = d["action"]
            practice = self.directory.by_id(action["practice_id"])
            if practice is None:
                result = await self._dead(action, "unknown practice (not in the config topic)", entry)
            else:
                resume = entry if entry and entry["state"] in (rec.ATTEMPTING, rec.RETRY) else None
                result = await self._sms(action, practice, d.get("caller"), partition, resume, fired=True)
            if result != rec.DEFERRED:
                del self.t.deferred[aid]
                await self._unindex(action, aid)
        finally:
            self._inflight.discard(aid)

    async def on_call_event(self, key: bytes | None, event: dict, partition: int | None = None) -> str | None:
        """Inbound SMS from patients: opt-out / opt-in words and sentences. An answered
        call (the caller reached staff) cancels the SMS still waiting out the quiet hours."""
        if (
            event.get("event_type") == "CALL"
            and event.get("direction") == "INBOUND"
            and event.get("outcome") == "ANSWERED"
        ):
            return await self._cancel_deferred(event, partition)
        if event.get("event_type") != "SMS" or event.get("direction") != "INBOUND":
            return None
        intent = rules.sms_intent(event.get("sms_body"))
        if intent not in (rules.OPT_OUT, rules.OPT_IN):
            return None
        ckey = f"{event['practice_id']}|{event['caller']}"
        source = (
            "keyword"
            if rules._normalise(event.get("sms_body") or "") in (rules.OPT_OUT_KEYWORDS | rules.OPT_IN_KEYWORDS)
            else "sentence"
        )
        await self._set_consent(ckey, "OUT" if intent == rules.OPT_OUT else "IN", event["occurred_at"], source)
        return intent

    async def _cancel_deferred(self, event: dict, partition: int | None) -> str | None:
        """Suppress the caller's SMS deferred before this answered call. Looks only at the
        ids the by-number index lists (one table read when nothing is deferred)."""
        if partition not in self._indexed:
            await self._index_existing(partition)
        practice_id, caller = event["practice_id"], event["caller"]
        ikey = deferred_index_key(practice_id, caller)
        listed = self._index_ids(ikey)
        if not listed:
            return None
        gone: set[str] = set()
        mine: set[str] = set()  # held in flight so that a TICK cannot fire them meanwhile
        try:
            for aid in listed:
                if aid in self._inflight:  # being deferred, fired or resumed right now: leave it
                    continue
                d = self.t.deferred.get(aid)
                if not d:
                    gone.add(aid)  # fired or cancelled, index not updated yet (or a crash in between)
                    continue
                a = d.get("action") or {}
                if (
                    a.get("practice_id") != practice_id
                    or a.get("recipient") != caller
                    or (partition is not None and d.get("partition") != partition)
                    or a.get("created_at", 0) > event["occurred_at"]
                ):
                    continue
                entry = self.t.sent_log.get(aid)
                if entry and entry["state"] != rec.DEFERRED:
                    continue
                self._inflight.add(aid)
                mine.add(aid)
                practice = self.directory.by_id(a["practice_id"])
                if practice is not None:
                    await self._suppress(
                        a, practice, caller, "cancel-if-answered: the caller reached staff", fallback=False
                    )
                await self.fx.persist("deferred", aid, None)
                gone.add(aid)
            if gone:
                await self._index_remove(ikey, gone, owned=mine)
        finally:
            self._inflight.difference_update(mine)
        return "CANCELLED" if mine else None

    # ------------------------------------------------------------ the by-number index
    # Crash safety: the index may list more than the table holds, never less. An id is
    # added (durably) before its deferred entry is written and removed only after the
    # entry is gone; listed ids without an entry are skipped and cleaned by the cancel.
    def _index_ids(self, ikey: str) -> list[str]:
        return list((self.t.deferred.get(ikey) or {}).get("action_ids") or [])

    async def _index_add(self, action: dict) -> None:
        ikey = deferred_index_key(action["practice_id"], action["recipient"])
        ids = self._index_ids(ikey)
        if action["action_id"] not in ids:
            await self.fx.persist("deferred", ikey, {"action_ids": ids + [action["action_id"]]})

    async def _index_remove(self, ikey: str, aids: set[str], owned: set[str] | frozenset = frozenset()) -> None:
        """Drop `aids` from the index, except those that have a deferred entry again or are
        in flight elsewhere (being deferred again): `owned` are in flight by the caller.
        Read and decided just before the write, with no await in between: the other agents
        of this process (actions, ticks) may have changed the index while we were awaiting."""
        ids = self._index_ids(ikey)
        keep = [i for i in ids if i not in aids or (i in self._inflight and i not in owned) or self.t.deferred.get(i)]
        if len(keep) != len(ids):
            await self.fx.persist("deferred", ikey, {"action_ids": keep} if keep else None)

    async def _unindex(self, action: dict | None, aid: str) -> None:
        """After the caller deleted the deferred entry of `aid` (with `aid` in flight by the
        caller, or not in flight at all)."""
        if action and action.get("practice_id") and action.get("recipient"):
            await self._index_remove(deferred_index_key(action["practice_id"], action["recipient"]), {aid}, owned={aid})

    async def _index_existing(self, partition: int | None) -> None:
        """Once per partition and process: index deferred entries written before the index
        existed (an upgrade). Only entries of `partition`: a table write goes to the
        changelog partition of the event being processed."""
        for aid, d in list(self.t.deferred.items()):
            if is_index_key(aid) or not d or (partition is not None and d.get("partition") != partition):
                continue
            a = d.get("action") or {}
            if (
                a.get("practice_id")
                and a.get("recipient")
                and aid not in self._index_ids(deferred_index_key(a["practice_id"], a["recipient"]))
            ):
                await self._index_add({**a, "action_id": aid})
        self._indexed.add(partition)

    async def on_message_status(self, key: bytes | None, status: dict) -> str | None:
        """A delivery receipt: an ACTION outcome DELIVERED / UNDELIVERED / FAILED once."""
        if str(status.get("error_code") or "") == "21610":
            await self._set_consent(
                f"{status['practice_id']}|{status['recipient']}", "OUT", status["received_at"], "twilio_21610"
            )
        result = {"delivered": "DELIVERED", "undelivered": "UNDELIVERED", "failed": "FAILED"}.get(
            (status.get("status") or "").lower()
        )
        aid = status.get("action_id")
        entry = self.t.sent_log.get(aid) if aid else None
        if result is None or aid is None or entry is None:
            return None
        if entry.get("delivery") in ("DELIVERED", "UNDELIVERED", "FAILED"):
            return None  # one delivery outcome per action (receipts repeat and arrive out of order)
        reason = f"Twilio error {status['error_code']}" if status.get("error_code") else None
        # The outcome first, as in `_finish`: a receipt redelivered after a crash repeats it.
        await self.fx.outcome(
            entry["case_id"].encode(), rec.outcome_record(entry, result, self.clock.now_ms(), reason, "sms")
        )
        await self.fx.persist("sent_log", aid, {**entry, "delivery": result, "delivery_at": status["received_at"]})
        child(ACTIONS_DONE, "SEND_SMS", result.lower(), practice_label(status.get("practice_id"))).inc()
        return result

    async def on_task_update(self, key: bytes | None, update: dict) -> str | None:
        task_id = update["task_id"]
        task = self.t.tasks.get(task_id)
        if task is None or task.get("state") == PENDING:
            # The update overtook its task (redelivery, replay): keep it until the task exists.
            holder = hold_update(task, update)
            if holder is not None:
                await self.fx.persist("tasks", task_id, holder)
            return PENDING
        new, why = apply_update(task, update)
        if why:
            log.debug("task update %s not applied: %s", update["update_id"], why)
            return why
        await self.fx.persist("tasks", task_id, new)
        return new["state"]

    # ================================================================== SMS
    async def _sms(
        self,
        action: dict,
        practice: Practice,
        caller: str | None,
        partition: int,
        entry: dict | None,
        fired: bool = False,
    ) -> str:
        if entry and entry["state"] in (rec.ATTEMPTING, rec.RETRY):
            # An attempt was started before (crash, rebalance, or a retried deferral):
            # the rules were passed then, and the message may be out already.
            return await self._deliver(action, practice, entry, fired)
        to, body = action["recipient"], action.get("body")
        if not E164.match(to or ""):
            return await self._fail(action, "recipient is not an E.164 number")
        if not body or not body.strip():
            return await self._fail(action, "an SMS needs a body")
        now = self.clock.now_ms()
        confirmation = (action.get("params") or {}).get("consent_confirmation") == "1"
        number = f"{practice.id}|{to}"
        consent = self.t.consent.get(number) or {}
        refused, send_at = rules.sms_decision(
            practice,
            now,
            recipient=to,
            body=body,
            opted_out=consent.get("state") == "OUT",
            sent_at_ms=self.t.sms_history.get(number) or [],
            confirmation=confirmation,
            already_confirmed=bool(consent.get("confirmed_at")),
        )
        if refused:
            return await self._suppress(action, practice, caller, refused, fallback=not confirmation)
        if send_at > now:
            return await self._defer(action, caller, partition, send_at, practice, fired)
        return await self._deliver(action, practice, None, fired)

    async def _defer(
        self, action: dict, caller: str | None, partition: int, due_at: int, practice: Practice, fired: bool
    ) -> str:
        aid = action["action_id"]
        await self._index_add(action)  # first: the index may list more than the table, never less
        await self.fx.persist(
            "deferred", aid, {"action": action, "caller": caller, "due_at": due_at, "partition": partition}
        )
        entry = {**rec.entry_base(action), "state": rec.DEFERRED, "due_at": due_at}
        if fired:
            await self.fx.persist("sent_log", aid, entry)
        else:
            child(SMS_DEFERRED, action["scenario"], practice_label(action["practice_id"])).inc()
            reason = f"quiet hours: deferred to {rec.local_time(due_at, practice.time_zone)}"
            await self._finish(action, "DEFERRED", [("sent_log", aid, entry)], reason)
        return rec.DEFERRED

    async def _deliver(self, action: dict, practice: Practice, entry: dict | None, fired: bool = False) -> str:
        aid, to, body = action["action_id"], action["recipient"], action["body"]
        sms = self.sms
        if sms is None:
            return await self._dead(action, "SMS action but TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN are not set", entry)
        callback = status_callback_url(self.env, practice.id, aid)
        base = rec.entry_base(action)
        state = {
            "sends": (entry or {}).get("attempts", 0),
            "first_wall": (entry or {}).get("first_wall"),
            "look_first": bool(entry and entry["state"] == rec.ATTEMPTING),
            "last": None,
        }
        if entry is not None and state["look_first"]:
            # Someone (this process before a crash, another worker before a rebalance)
            # may still have that request in flight: let it finish or time out first.
            settle = entry["started_wall"] + sms.timeout_s + SETTLE_MARGIN_S - self.wall()
            if settle > 0:
                await self.sleep(min(settle, sms.timeout_s + SETTLE_MARGIN_S))

        async def attempt() -> str:
            if state["look_first"]:
                async with self.throttle.slot(practice.id):
                    found = await sms.find_sent(practice, to, body, int(state["first_wall"] * 1000))
                child(LOOKUPS, "found" if found else "not_found").inc()
                log.info(
                    "action %s: earlier attempt %s at Twilio",
                    aid,
                    "found: not sending again" if found else "not found: sending",
                )
                if found:
                    return found
                state["look_first"] = False
            if state["sends"] >= self.policy.attempts:
                raise Transient(state["last"] or "retry budget spent")
            wall = state["sent_wall"] = self.wall()
            state["first_wall"] = state["first_wall"] or wall
            state["sends"] += 1
            await self.fx.persist(
                "sent_log",
                aid,
                {
                    **base,
                    "state": rec.ATTEMPTING,
                    "attempts": state["sends"],
                    "started_wall": wall,
                    "first_wall": state["first_wall"],
                    "body_sha": body_digest(body),
                },
            )
            started = time.perf_counter()
            log.debug("action %s: Twilio attempt %d", aid, state["sends"])
            try:
                async with self.throttle.slot(practice.id):
                    return await sms.send(practice, to, body, callback)
            except Transient as exc:  # RateLimited: the throttle paused the practice; this lane retries
                state["last"] = str(exc)
                state["look_first"] = exc.ambiguous
                if not exc.ambiguous:
                    await self.fx.persist(
                        "sent_log",
                        aid,
                        {
                            **base,
                            "state": rec.RETRY,
                            "attempts": state["sends"],
                            "first_wall": state["first_wall"],
                            "started_wall": wall,
                        },
                    )
                raise
            finally:
                child(CALL_SECONDS, "twilio").observe(time.perf_counter() - started)

        try:
            sid = await self._retrying("twilio", attempt, state)
        except OptedOut as exc:
            await self._set_consent(f"{practice.id}|{to}", "OUT", self.clock.now_ms(), "twilio_21610")
            return await self._suppress(action, practice, None, str(exc), fallback=True)
        except Permanent as exc:
            return await self._fail(action, str(exc))
        except Transient as exc:
            if exc.ambiguous or state["look_first"]:
                try:  # a last look: the final attempt may have gone out after all
                    async with self.throttle.slot(practice.id):
                        sid = await sms.find_sent(practice, to, body, int((state["first_wall"] or 0) * 1000))
                except Transient:
                    sid = None
                if sid:
                    self._first_response(action, state, fired)
                    return await self._sent_sms(action, practice, sid, {**base, "attempts": state["sends"]})
            return await self._dead(action, f"retry budget spent after {state['sends']} attempts: {exc}", entry)
        self._first_response(action, state, fired)
        return await self._sent_sms(action, practice, sid, {**base, "attempts": state["sends"]})

    def _first_response(self, action: dict, state: dict, fired: bool) -> None:
        """Missed call reported at the gateway -> the first patient SMS of its case left for
        Twilio (the start of the attempt that got it accepted). Not for an SMS deferred to
        the end of the quiet hours: that wait is by design (ringback_sink_sms_deferred_total)."""
        reported = action.get("call_reported_at")
        if fired or not reported or action.get("step") not in FIRST_RESPONSE_STEPS:
            return
        sent = state.get("sent_wall") or state.get("first_wall") or self.wall()
        child(FIRST_RESPONSE, action["scenario"], practice_label(action["practice_id"])).observe(
            max(0.0, sent - reported / 1000)
        )

    async def _sent_sms(self, action: dict, practice: Practice, sid: str, base: dict) -> str:
        aid, to = action["action_id"], action["recipient"]
        now = self.clock.now_ms()
        hkey = f"{practice.id}|{to}"
        history = rules.prune_sent(list(self.t.sms_history.get(hkey) or []), now)
        # One broker round trip for all of them: written together, acknowledged together.
        writes: list[Write] = [("sent_log", aid, {**base, "state": rec.SENT, "sid": sid, "at": now})]
        writes.append(("sms_history", hkey, history + [now]))
        if (action.get("params") or {}).get("consent_confirmation") == "1":
            state = self.t.consent.get(hkey) or {"state": "IN", "at": 0, "source": None}
            writes.append(("consent", hkey, {**state, "confirmed_at": now}))
        await self._finish(action, rec.SENT, writes)
        log.debug("action %s sent (partition key hash %s)", aid, body_digest(hkey)[:8])
        return rec.SENT

    # ================================================================== staff
    async def _notify(self, action: dict, practice: Practice, caller: str | None, entry: dict | None) -> str:
        aid = action["action_id"]
        target = resolve_target(action["recipient"], practice)
        if target is None:
            return await self._fail(action, "recipient is neither slack:<secret>, email:<address> nor a routed role")
        channel, address = target
        message = rec.staff_message(action, practice.name, practice.time_zone, self.env.ringback_console_url)
        if channel == "slack":
            url = read_secret(address, self.env)
            if not url or self.slack is None:
                return await self._fail(action, f"Slack webhook secret {address} is not set", channel)

            async def call() -> None:
                await self.slack.post(url, message.text, urgent=message.urgent)
        else:
            if self.mailer is None:
                return await self._fail(action, "e-mail action but SMTP_URL is not set", channel)

            async def call() -> None:
                await self.mailer.send(aid, address, message.subject, message.text, urgent=message.urgent)

        base = rec.entry_base(action)
        # No look-up exists for Slack or e-mail: an attempt cut short by a crash is made
        # again (at least once); e-mail keeps one Message-ID for every attempt.
        state = {"sends": (entry or {}).get("attempts", 0), "last": None}

        async def attempt() -> None:
            if state["sends"] >= self.policy.attempts:
                raise Transient(state["last"] or "retry budget spent")
            state["sends"] += 1
            await self.fx.persist(
                "sent_log",
                aid,
                {**base, "state": rec.ATTEMPTING, "attempts": state["sends"], "started_wall": self.wall()},
            )
            started = time.perf_counter()
            try:
                await call()
            except Transient as exc:
                state["last"] = str(exc)
                raise
            finally:
                child(CALL_SECONDS, channel).observe(time.perf_counter() - started)

        try:
            await self._retrying(channel, attempt, state)
        except Permanent as exc:
            return await self._fail(action, str(exc), channel)
        except Transient as exc:
            return await self._dead(
                action, f"retry budget spent after {state['sends']} attempts: {exc}", entry, channel
            )
        entry = {**base, "state": rec.SENT, "at": self.clock.now_ms(), "channel": channel}
        await self._finish(action, rec.SENT, [("sent_log", aid, entry)], channel=channel)
        return rec.SENT

    async def _create_task(
        self, action: dict, practice: Practice, caller: str | None, role: str | None = None, reason: str | None = None
    ) -> str:
        aid = action["action_id"]
        existing = self.t.tasks.get(aid)
        adds, target = add_reply(action, self.t.tasks.get)  # a patient's further reply: to their open task
        if adds:
            if target is not None:
                await self.fx.persist("tasks", target["task_id"], target)
        elif existing and existing.get("state") != PENDING:
            child(DUPLICATES, action["kind"]).inc()
        else:
            params = action.get("params") or {}
            recipient = action.get("recipient") or ""
            role = (
                role
                or params.get("role")
                or (recipient if ":" not in recipient else None)
                or SCENARIO_ROLE.get(action["scenario"], "admin_team")
            )
            task = new_task(action, caller or "", role, self.clock.now_ms(), reason)
            for update in (existing or {}).get("pending_updates", []):
                task, _ = apply_update(task, update)
            await self.fx.persist("tasks", aid, task)
        entry = {**rec.entry_base(action), "state": rec.SENT, "at": self.clock.now_ms(), "channel": "task"}
        await self._finish(action, rec.SENT, [("sent_log", aid, entry)], channel="task")
        return rec.SENT

    # ================================================================== results
    async def _retrying(self, sink: str, attempt: Callable[[], Awaitable], state: dict):
        policy = self.policy

        def stop(retry_state) -> bool:
            return state["sends"] >= policy.attempts or retry_state.attempt_number >= 2 * policy.attempts

        def counted(retry_state) -> None:
            child(RETRIES, sink).inc()
            log.warning("%s attempt failed, retrying: %s", sink, retry_state.outcome.exception())

        async for try_ in AsyncRetrying(
            stop=stop,
            wait=policy.wait(),
            retry=retry_if_exception_type(Transient),
            reraise=True,
            sleep=self.sleep,
            before_sleep=counted,
        ):
            with try_:
                return await attempt()

    async def _suppress(self, action: dict, practice: Practice, caller: str | None, why: str, fallback: bool) -> str:
        aid = action["action_id"]
        entry = {**rec.entry_base(action), "state": rec.SUPPRESSED, "reason": why, "at": self.clock.now_ms()}
        await self._finish(action, rec.SUPPRESSED, [("sent_log", aid, entry)], why)
        log.debug("SMS %s suppressed: %s", aid, why)
        if fallback and action["kind"] == "SEND_SMS":
            # The last line of defence held the SMS back: staff call back instead.
            params = action.get("params") or {}
            role = params.get("fallback_role") or SCENARIO_ROLE.get(action["scenario"], "admin_team")
            task_action = {
                **action,
                "action_id": f"{aid}:callback",
                "kind": "CREATE_TASK",
                "body": None,
                "recipient": role,
                "params": {"role": role},
                "step": f"{action['step']}_callback",
                "due_at": self.clock.now_ms(),
            }
            await self._create_task(
                task_action,
                practice,
                caller or action["recipient"],
                role=role,
                reason=f"patient SMS not sent ({why}): call back instead",
            )
            notice = task_notice(practice, action, task_action)  # the role is told, as for the worker's tasks
            if notice is not None and notice["action_id"] not in self.t.sent_log:
                await self._notify(notice, practice, caller, None)
        return rec.SUPPRESSED

    async def _fail(self, action: dict, why: str, channel: str | None = None) -> str:
        aid = action["action_id"]
        await self._dead_letter(action, why)
        entry = {**rec.entry_base(action), "state": rec.FAILED, "reason": why, "at": self.clock.now_ms()}
        await self._finish(action, rec.FAILED, [("sent_log", aid, entry)], why, channel)
        log.error("action %s failed for good: %s", aid, why)
        return rec.FAILED

    async def _dead(self, action: dict, why: str, entry: dict | None, channel: str | None = None) -> str:
        aid = action["action_id"]
        await self._dead_letter(action, why)
        final = {
            **rec.entry_base(action),
            "state": rec.DEAD_LETTERED,
            "reason": why,
            "at": self.clock.now_ms(),
            "attempts": (entry or {}).get("attempts", 0),
        }
        await self._finish(action, rec.DEAD_LETTERED, [("sent_log", aid, final)], why, channel)
        log.error("action %s dead-lettered: %s", aid, why)
        return rec.DEAD_LETTERED

    async def _finish(
        self, action: dict, result: str, writes: list[Write], reason: str | None = None, channel: str | None = None
    ) -> None:
        """The action's outcome record, acknowledged, then its final writes. Never the other
        way round: a redelivered action whose entry is final is skipped, so an outcome still
        unsent when the entry was written would be lost for good by a crash; in this order a
        crash repeats it (same `outcome_id`: readers deduplicate) with the action."""
        await self._outcome(action, result, reason, channel)
        await self.fx.persist_all(writes)

    async def _dead_letter(self, action: dict, why: str) -> None:
        """Acknowledged before the final entry, like the outcome (`_finish`)."""
        await self.fx.dead_letter(
            f"sinks.{action['kind'].lower()}".encode(), rec.dead_letter_record(action, why, self.clock.now_ms())
        )
        child(DEAD_LETTERS, action["kind"]).inc()
        child(ALL_DEAD_LETTERS, f"sinks.{action['kind'].lower()}").inc()

    async def _outcome(self, action: dict, result: str, reason: str | None = None, channel: str | None = None) -> None:
        child(ACTIONS_DONE, action["kind"], result.lower(), practice_label(action.get("practice_id"))).inc()
        await self.fx.outcome(
            action["case_id"].encode(), rec.outcome_record(action, result, self.clock.now_ms(), reason, channel)
        )

    async def _set_consent(self, ckey: str, state: str, at: int, source: str) -> None:
        old = self.t.consent.get(ckey)
        if old and old.get("at", 0) > at:
            return  # an older message arriving late does not undo a newer choice
        confirmed = (old or {}).get("confirmed_at")
        if state == "OUT" and (old or {}).get("state") != "OUT" and not (confirmed and confirmed >= at):
            confirmed = None  # a new opt-out: one new confirmation allowed
        if old and old.get("state") == state and old.get("confirmed_at") == confirmed:
            return
        await self.fx.persist("consent", ckey, {"state": state, "at": at, "source": source, "confirmed_at": confirmed})
        child(CONSENT, "opt_out" if state == "OUT" else "opt_in", source).inc()


def caller_of(key: bytes | str | None, action: dict) -> str | None:
    """The caller, from the record key `practice_id|caller` (staff actions have no other)."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    if key and "|" in key:
        return key.split("|", 1)[1]
    return action["recipient"] if action.get("kind") == "SEND_SMS" else None


def resolve_target(recipient: str, practice: Practice) -> tuple[str, str] | None:
    """`slack:<SECRET>` / `email:<address>`, or a role routed in the practices file."""
    target = recipient if recipient.startswith(("slack:", "email:")) else practice.routing.get(recipient, "")
    channel, _, address = target.partition(":")
    if channel in ("slack", "email") and address:
        return channel, address
    return None
