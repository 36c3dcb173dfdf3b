"""A worker is killed (SIGKILL) while gate timers are pending: they fire once, on the survivor.

Two `ringback worker` processes (RocksDB stores, as in production) share the
partitions. Twelve new-patient cases, three per partition, get their first SMS; then
the worker owning some of them is killed while every 2 h follow-up gate (6 s here, due
before the survivor takes over) is pending. The survivor takes the partitions over
(session timeout), restores the state from its standby/changelog and fires every
follow-up and every case end: each action and each outcome exactly once, the killed
worker's gates emitted by the survivor.
"""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from ringback.domain import recipes
from ringback.kafka import topics
from tests.conftest import REPO, free_port, wait_for
from tests.support import kafka_tools
from tests.worker.test_reference_day import Collector, Feed, now_ms, worker_env

pytestmark = pytest.mark.integration

PRACTICE, DID = "crash-test", "+13125550400"
PARTITIONS = 4


def group_assignments(bootstrap: str, group: str) -> list[set[tuple[str, int]]]:
    """The partitions of every member of a stable consumer group ([] while rebalancing)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    if description.state != ConsumerGroupState.STABLE:
        return []
    return [{(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} for m in description.members]


@pytest.fixture
def out(service_env, kafka_bootstrap):
    collector = Collector(kafka_bootstrap, service_env["RINGBACK_NAMESPACE"])
    yield collector
    collector.close()


def test_pending_gates_fire_once_on_the_survivor_of_a_sigkill(processes, service_env, kafka_bootstrap, tmp_path, out):
    ns = service_env["RINGBACK_NAMESPACE"]
    assert processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml")).returncode == 0
    workers = {}
    for name in ("worker-a", "worker-b"):
        proc = processes.start(
            name,
            "worker",
            env=worker_env(
                RINGBACK_STORE="rocksdb://",
                RINGBACK_STATE_DIR=str(tmp_path / name),
                RINGBACK_WORKER_WEB_PORT=str(free_port()),
            ),
        )
        workers[name] = proc
    calls_topic = f"{ns}.call-events"

    def both_working() -> bool:
        members = group_assignments(kafka_bootstrap, f"{ns}-streams")
        return len(members) == 2 and all(any(t == calls_topic for t, _ in m) for m in members)

    wait_for(both_working, 120, interval=0.5, message="two workers sharing the call-event partitions")

    feed = Feed(kafka_bootstrap, ns, PARTITIONS, practice=PRACTICE, did=DID)
    callers: list[str] = []
    per_partition: Counter = Counter()
    n = 0
    while len(callers) < 12:
        phone = f"+1872555{n:04d}"
        n += 1
        if per_partition[feed.partition(phone)] < 3:
            per_partition[feed.partition(phone)] += 1
            callers.append(phone)
    cases = {}
    for phone in callers:
        event = feed.call(phone)
        cases[phone] = recipes.case_id(PRACTICE, phone, event["event_id"])

    for phone in callers:
        out.action(f"{cases[phone]}:first_sms", timeout=60)
    first = {a["action_id"]: a for a in out.actions() if a["step"] == "first_sms"}
    owner = {a["_partition"]: a["_headers"]["ringback-worker"].decode() for a in first.values()}
    assert len(set(owner.values())) == 2, owner  # both workers were handling cases
    victim = next(name for name, proc in workers.items() if owner[0].endswith(f"-{proc.pid}"))
    survivor = next(name for name in workers if name != victim)
    victim_partitions = {p for p, w in owner.items() if w == owner[0]}
    # The gates are pending: no follow-up has fired yet.
    assert not [a for a in out.actions() if a["step"] == "second_sms"], "killed too late: gates already fired"
    killed_at = now_ms()
    processes.kill(victim)  # SIGKILL, no goodbye

    expected = {
        f"{cases[p]}:{s}"
        for p in callers
        for s in ("first_sms", "notify_coordinator", "second_sms", "callback_task", "callback_task_notice")
    }

    def finals() -> list[dict]:
        return [o for o in out.outcomes() if o["final"]]

    wait_for(
        lambda: expected <= {a["action_id"] for a in out.actions()} and len(finals()) == 12,
        120,
        interval=0.5,
        message="every pending gate and every case end fired after the kill",
    )
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-streams", calls_topic),
        30,
        message="the survivor committed the call events",
    )
    assert processes.procs[survivor].poll() is None

    actions = out.actions()
    counts = Counter(a["action_id"] for a in actions)
    assert {i: c for i, c in counts.items() if c > 1} == {}, "emitted twice"
    assert set(counts) == expected
    outcome_counts = Counter(o["outcome_id"] for o in out.outcomes())
    assert {i: c for i, c in outcome_counts.items() if c > 1} == {}, "outcome emitted twice"
    assert len(outcome_counts) == 12 * 4  # OPEN, RESPONDED, ESCALATED, ESCALATED_AND_CLOSED
    assert {o["state"] for o in finals()} == {"ESCALATED_AND_CLOSED"}

    survivor_id = f"-{workers[survivor].pid}"
    followups = [a for a in actions if a["step"] in ("second_sms", "callback_task")]
    on_victims = [a for a in followups if a["_partition"] in victim_partitions]
    assert on_victims and all(a["_headers"]["ringback-worker"].decode().endswith(survivor_id) for a in on_victims)
    assert all(a["created_at"] >= killed_at for a in on_victims)
    takeover = max(a["created_at"] - (a["call_reported_at"] + 12000) for a in on_victims)
    print(
        f"\nvictim partitions {sorted(victim_partitions)}: follow-ups fired by the survivor, "
        f"at most {takeover} ms after due (session timeout 6 s)"
    )
    assert all(topics.partition_for(a["_key"], PARTITIONS) == a["_partition"] for a in actions)


def test_a_crash_between_sending_and_writing_the_state_emits_nothing_twice(
    processes, service_env, kafka_bootstrap, tmp_path, out
):
    """The worst moment: the follow-up's records are in the log, the state that knows of
    them is not (the worker dies right after the acknowledgements). The worker that takes
    over fires the gate again, finds those ids after the partition's last recorded offsets
    and does not send them again."""
    ns = service_env["RINGBACK_NAMESPACE"]
    assert processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml")).returncode == 0
    doomed = processes.start(
        "worker-a",
        "worker",
        env=worker_env(
            RINGBACK_STORE="rocksdb://",
            RINGBACK_STATE_DIR=str(tmp_path / "a"),
            RINGBACK_FAULT_EXIT_AFTER_SENDING="second_sms",
        ),
    )
    wait_for(
        lambda: len(group_assignments(kafka_bootstrap, f"{ns}-streams")) == 1,
        120,
        interval=0.5,
        message="the worker owning every partition",
    )  # so the follow-up is a gate timer firing
    feed = Feed(kafka_bootstrap, ns, PARTITIONS, practice=PRACTICE, did=DID)
    callers, seen_partitions, n = [], set(), 0
    while len(callers) < PARTITIONS:
        phone = f"+1872666{n:04d}"
        n += 1
        if feed.partition(phone) not in seen_partitions:
            seen_partitions.add(feed.partition(phone))
            callers.append(phone)
    cases = {phone: recipes.case_id(PRACTICE, phone, feed.call(phone)["event_id"]) for phone in callers}

    wait_for(lambda: doomed.poll() is not None, 90, message="the worker to die after sending a follow-up")
    assert doomed.returncode == 137
    # It died after the follow-up's records were acknowledged: they are in the log (the
    # collector reads it on its own schedule, so wait for them rather than look once).
    wait_for(
        lambda: any(a["action_id"].endswith(":second_sms") for a in out.actions()),
        30,
        message="the follow-up the worker sent before dying",
    )
    log_file = processes.log_dir / "worker-b.log"
    log_start = log_file.stat().st_size if log_file.exists() else 0  # the artifact log is appended to
    processes.start(
        "worker-b", "worker", env=worker_env(RINGBACK_STORE="rocksdb://", RINGBACK_STATE_DIR=str(tmp_path / "b"))
    )

    expected = {
        f"{cases[p]}:{s}"
        for p in callers
        for s in ("first_sms", "notify_coordinator", "second_sms", "callback_task", "callback_task_notice")
    }
    wait_for(
        lambda: (
            expected <= {a["action_id"] for a in out.actions()}
            and len([o for o in out.outcomes() if o["final"]]) == len(callers)
        ),
        120,
        interval=0.5,
        message="the restarted worker finished every case",
    )
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-streams", f"{ns}.call-events"),
        30,
        message="the worker committed the call events",
    )
    counts = Counter(a["action_id"] for a in out.actions())
    assert {i: c for i, c in counts.items() if c > 1} == {}, "emitted twice"
    assert set(counts) == expected
    outcome_counts = Counter(o["outcome_id"] for o in out.outcomes())
    assert {i: c for i, c in outcome_counts.items() if c > 1} == {}, "outcome emitted twice"
    assert len(outcome_counts) == len(callers) * 4
    # Each partition's follow-up (3 actions: SMS, task, its notice; 1 outcome) was found in the log, not sent again.
    log_text = log_file.read_bytes()[log_start:].decode(errors="replace")
    assert "3 actions and 1 outcomes were sent before a crash" in log_text
