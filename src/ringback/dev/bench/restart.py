"""Figure (d): worker restart to the first processed event with 1,000,000 entries in
the state table (RocksDB, the production store).

Build: N EHR entries (`e|<practice>|<phone>`: a patient and, for some, an upcoming
appointment, as the agent stores them) are written straight to the state table's
changelog, each in the partition of its key's caller (what the agent does), so no
hour of EHR sync is needed to fill it. Then:

1. cold start: an empty state folder, the worker restores all N entries from the
   changelog into RocksDB (a new machine, a lost disk);
2. warm restart: SIGTERM, start again: RocksDB on disk, only the changelog tail is read;
3. restart after SIGKILL: the group first waits out the dead member's session (10 s).

Each time a missed call from a patient among the N entries is produced while the
worker is down; the time is from spawning `ringback worker` to the timestamp of the
action record it produces for that call. The action's kind proves the entry was read:
a known patient gets an admin task (general inquiry), an unknown number a first SMS.
"""

from __future__ import annotations

import json
import random
import signal
import time

from ringback.dev.bench import workload
from ringback.dev.bench.harness import Namespace, log, read_records, wait_until
from ringback.kafka import topics


def _entries(count: int, practices: int, partitions: int, now_ms: int):
    """(key, value, partition) of `count` EHR entries in the changelog's encoding
    (Faust's json codec for keys and values of the `state` table)."""
    rng = random.Random(13)
    for n in range(count):
        p = n % practices
        pid, phone = workload.practice_id(p), workload.caller_number(n)
        value = {
            "patient": {
                "patient_id": f"pat-{n}",
                "display_name": f"Patient {n}",
                "deceased": False,
                "assigned_provider": None,
                "updated_at": now_ms - 86_400_000,
            },
            "appointments": {},
            "flags": {},
        }
        if rng.random() < 0.3:
            aid = f"appt-{n}"
            value["appointments"][aid] = {
                "appointment_id": aid,
                "start": now_ms + rng.randrange(1, 14) * 86_400_000,
                "status": "booked",
                "updated_at": now_ms - 86_400_000,
            }
        key = f"e|{pid}|{phone}"
        yield (
            json.dumps(key).encode(),
            json.dumps(value, separators=(",", ":")).encode(),
            topics.partition_for(topics.join_key(pid, phone), partitions),
        )


def _probe(ns: Namespace, n: int, practices: int) -> tuple[str, str]:
    """Produce a missed call from known patient #n; returns (practice id, caller)."""
    rng = random.Random(n)
    p = n % practices
    event = workload.call_event(p, workload.caller_number(n), "MISSED", int(time.time() * 1000), rng)
    ns.produce(ns.topic(topics.CALL_EVENTS), [workload.keyed(event, ns.partitions)])
    return workload.practice_id(p), workload.caller_number(n)


def _first_action(ns: Namespace, caller: str, timeout: float, alive) -> tuple[float, str]:
    """(timestamp in s, step) of the first action for `caller`."""
    found: dict = {}

    def look() -> bool:
        if not alive():
            raise RuntimeError("the worker exited; see " + str(ns.log_dir))
        for _, action, ts in read_records(ns.bootstrap, ns.topic(topics.ACTIONS), "action_command", timeout=10):
            if action["recipient"] == caller or action["params"].get("caller") == caller:
                found.setdefault("at", (ts / 1000, action["step"]))
        return bool(found)

    wait_until(look, timeout, "the probe call's action", interval=0.5)
    return found["at"]


def run(ns: Namespace, *, entries: int, practices: int, timeout: float) -> dict:
    log(f"(d) restart with {entries:,} table entries (RocksDB)")
    ns.apply_practices(workload.practices(practices, {"first_response_hold": 0}))
    ns.ensure_changelog()
    t0 = time.monotonic()
    ns.produce(ns.state_changelog, _entries(entries, practices, ns.partitions, int(time.time() * 1000)))
    write_s = time.monotonic() - t0
    log(f"    wrote {entries:,} entries to {ns.state_changelog} in {write_s:.1f}s")
    results: dict = {"entries": entries, "changelog_write_s": write_s}
    probe_n = 7
    env = {"RINGBACK_STORE": "rocksdb://"}
    # How each run ends: SIGTERM before the warm restart, SIGKILL before the last one.
    for label, stop_with in (
        ("cold_start", signal.SIGTERM),
        ("warm_restart", signal.SIGKILL),
        ("restart_after_sigkill", signal.SIGTERM),
    ):
        probe_n += 101
        _, caller = _probe(ns, probe_n, practices)
        worker = ns.worker(f"worker-{label}", env=env)
        try:
            at, step = _first_action(ns, caller, timeout, worker.alive)
        finally:
            worker.stop(stop_with)
        seconds = at - worker.started_at
        results[label] = {
            "seconds": seconds,
            "step": step,
            "known_patient": step != "first_sms",
            "peak_rss_kb": worker.peak_rss_kb,
        }
        log(
            f"    {label.replace('_', ' ')}: first event processed {seconds:.1f}s after the start "
            f"({'the patient entry was found' if step != 'first_sms' else 'ENTRY NOT FOUND'}; "
            f"peak RSS {(worker.peak_rss_kb or 0) / 1024:.0f} MiB)"
        )
    results["restart_s"] = results["warm_restart"]["seconds"]
    return results
