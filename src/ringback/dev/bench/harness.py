"""What every figure needs: a broker, a namespace of its own, `ringback` processes,
fast producers, committed offsets, peak RSS.

A figure runs in its own namespace (topics, consumer groups, state folder) on the
bench's broker, so figures never see each other's records and a run never touches
anything else on the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ringback.dev.local_kafka import LocalKafka, free_port
from ringback.dev.waiting import wait_for

if TYPE_CHECKING:
    from confluent_kafka import Consumer

BENCH_ACCOUNT = "AC" + "b" * 32
BENCH_TOKEN = "bench-auth-token-not-a-secret"  # signs the simulated webhooks; not a secret
SLACK_SECRET = "BENCH_SLACK_WEBHOOK"  # the practices' staff route: a Slack webhook on the stand-in


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- processes and memory
def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A `VmRSS` / `VmHWM` (peak RSS) line of /proc/<pid>/status, in kB (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, in seconds (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    started_at: float  # time.time() just before the spawn
    peak_rss_kb: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_kb(self) -> int | None:
        return proc_status_kb(self.pid, "VmRSS")

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.pid)

    def sample_peak(self) -> int | None:
        """Peak RSS so far (the kernel's high-water mark), remembered past the exit."""
        hwm = proc_status_kb(self.pid, "VmHWM")
        if hwm is not None:
            self.peak_rss_kb = max(self.peak_rss_kb or 0, hwm)
        return self.peak_rss_kb

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        self.sample_peak()
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)

    def dump_stacks(self) -> None:
        """Append the Python stacks of the process (py-spy, when installed) to its log:
        what a stalled worker was waiting for."""
        import shutil as _shutil

        spy = _shutil.which("py-spy")
        if spy is None or not self.alive():
            return
        try:
            out = subprocess.run([spy, "dump", "--pid", str(self.pid)], capture_output=True, text=True, timeout=30)
            with open(self.log_path, "a") as f:
                f.write(f"\n=== bench: py-spy dump at {time.strftime('%H:%M:%S')}\n{out.stdout}{out.stderr}\n")
        except (OSError, subprocess.SubprocessError):
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


# ---------------------------------------------------------------- the bench's broker
class Broker:
    """KAFKA_BOOTSTRAP_SERVERS when set, else a local broker of our own (stopped at the end)."""

    def __init__(self, out_dir: Path) -> None:
        self.local: LocalKafka | None = None
        self.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or ""
        self.out_dir = out_dir

    def start(self) -> str:
        if not self.bootstrap:
            self.local = LocalKafka(port=free_port(), home=self.out_dir / "kafka")
            t0 = time.monotonic()
            self.local.start()
            self.bootstrap = self.local.bootstrap
            log(f"· local Kafka broker on {self.bootstrap} (ready in {time.monotonic() - t0:.1f}s)")
        else:
            log(f"· using the broker at {self.bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        return self.bootstrap

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
            self.local = None


# ---------------------------------------------------------------- one namespace per figure
@dataclass
class Namespace:
    """Topics, groups and state of one figure, and the processes it started."""

    bootstrap: str
    name: str
    partitions: int
    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    broker_pid: int | None = None  # the bench's own local broker (for its CPU), else unknown

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        from ringback.config.settings import Settings

        self.settings = Settings(
            kafka_bootstrap_servers=self.bootstrap,
            ringback_namespace=self.name,
            ringback_partitions=self.partitions,
            ringback_state_dir=self.work_dir / "state",
        )

    # -- environment of the `ringback` processes
    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "RINGBACK_NAMESPACE": self.name,
                "RINGBACK_PARTITIONS": str(self.partitions),
                "RINGBACK_STATE_DIR": str(self.work_dir / "state"),
                "RINGBACK_SECRETS_DIR": str(self.work_dir / "secrets"),
                "TWILIO_ACCOUNT_SID": BENCH_ACCOUNT,
                "TWILIO_AUTH_TOKEN": BENCH_TOKEN,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def topic(self, spec) -> str:
        from ringback.kafka import topics

        return topics.topic_name(spec, self.settings)

    @property
    def streams_group(self) -> str:
        return f"{self.name}-streams"

    @property
    def state_changelog(self) -> str:
        return f"{self.name}-streams-state-changelog"

    # -- set-up
    def apply_practices(self, practices: list[dict]) -> Path:
        """Write the practices file, create the topics and publish it (as `ringback config apply`)."""
        from ringback.config.practices_file import load_practices
        from ringback.kafka import admin, topics
        from ringback.kafka.practice_directory import practice_record
        from ringback.kafka.producer import AckedProducer
        from ringback.schemas import codec

        path = self.work_dir / "practices.yaml"
        path.write_text(yaml.safe_dump({"practices": practices}, sort_keys=False))
        parsed = load_practices(path)
        admin.ensure_topics(self.settings)
        producer = AckedProducer(self.bootstrap, timeout_s=10)
        name = self.topic(topics.PRACTICE_CONFIG)
        now = int(time.time() * 1000)
        for p in parsed.practices:
            producer.send_sync(name, p.id.encode(), codec.encode("practice_config", practice_record(p, now)))
        producer.close()
        return path

    def ensure_changelog(self) -> None:
        """The state table's changelog with the co-partitioned count (Faust would create it
        at the first start; a figure that writes it first needs it now)."""
        create_topics(self.bootstrap, [(self.state_changelog, self.partitions, {"cleanup.policy": "compact"})])

    # -- processes
    def start(self, label: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A `ringback` command."""
        return self.start_python(label, "ringback.cli", *args, env=env)

    def start_python(self, label: str, module: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """`python -m module args`, its output in `<logs>/<label>.log`, stopped with the namespace."""
        log_path = self.log_dir / f"{label}.log"
        out = open(log_path, "ab")
        started = time.time()
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**self.env, **(env or {})},
            cwd=str(self.work_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        proc = Proc(label, popen, log_path, started)
        self.procs.append(proc)
        return proc

    def worker(self, label: str = "worker", env: dict[str, str] | None = None) -> Proc:
        return self.start(label, "worker", env={"RINGBACK_WORKER_WEB_PORT": str(free_port()), **(env or {})})

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()

    # -- data
    def produce(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]]) -> int:
        return produce(self.bootstrap, topic, records)

    def committed(self, group: str, topic: str) -> int:
        return committed_total(self.bootstrap, group, topic)

    def end(self, topic: str) -> int:
        return sum(end_offsets(self.bootstrap, topic).values())


# ---------------------------------------------------------------- Kafka helpers
def create_topics(bootstrap: str, wanted: list[tuple[str, int, dict]]) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=15).topics
    todo = [NewTopic(n, num_partitions=p, replication_factor=1, config=c) for n, p, c in wanted if n not in existing]
    if not todo:
        return
    for _, fut in admin.create_topics(todo, request_timeout=30).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]]) -> int:
    """Produce fast (batched, acks=all) and wait for every acknowledgement; (key, value,
    partition or None for murmur2 of the key, as every ringback producer)."""
    from confluent_kafka import Producer

    errors: list = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "compression.type": "none",
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(err)

    n = 0
    for key, value, partition in records:
        while True:
            try:
                if partition is None:
                    producer.produce(topic, key=key, value=value, on_delivery=delivered)
                else:
                    producer.produce(topic, key=key, value=value, partition=partition, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if errors or remaining:
        raise RuntimeError(f"producing to {topic} failed: {errors[:3]} ({remaining} not acknowledged)")
    return n


_consumers: dict[str, Consumer] = {}


def _probe(bootstrap: str, group: str) -> Consumer:
    from confluent_kafka import Consumer

    key = f"{bootstrap}|{group}"
    consumer = _consumers.get(key)
    if consumer is None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        _consumers[key] = consumer
    return consumer


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    consumer = _probe(bootstrap, "bench-probe")
    md = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None:
        return {}
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}


def committed_total(bootstrap: str, group: str, topic: str, partitions: int | None = None) -> int:
    """The sum of a group's committed offsets on a topic (0 for partitions without one)."""
    from confluent_kafka import TopicPartition

    consumer = _probe(bootstrap, group)
    if partitions is None:
        partitions = len(end_offsets(bootstrap, topic))
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)


def close_probes() -> None:
    for consumer in _consumers.values():
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
    _consumers.clear()


class Stalled(TimeoutError):
    """The group's committed offsets stopped moving before the target was reached."""

    def __init__(self, message: str, samples: list[tuple[float, int]], partitions: dict[int, tuple[int, int]]):
        super().__init__(message)
        self.samples = samples
        self.partitions = partitions  # partition -> (committed, end) of the partitions behind


def behind(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """Partitions whose committed offset is short of the end: partition -> (committed, end)."""
    from confluent_kafka import TopicPartition

    ends = end_offsets(bootstrap, topic)
    committed = _probe(bootstrap, group).committed([TopicPartition(topic, p) for p in ends], timeout=10)
    return {tp.partition: (tp.offset, ends[tp.partition]) for tp in committed if tp.offset < ends[tp.partition]}


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    target: int,
    timeout: float,
    interval: float = 0.1,
    base: int = 0,
    on_sample: Callable[[float, int], object] | None = None,
    alive: Callable[[], bool] | None = None,
    stall_s: float | None = None,
) -> list[tuple[float, int]]:
    """Poll the group's committed offsets until `target` records past `base` are committed;
    returns the (monotonic time, records done) samples. Raises TimeoutError at the deadline,
    `Stalled` when nothing more was committed for `stall_s` seconds after the first commit."""
    partitions = len(end_offsets(bootstrap, topic))
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        if stall_s and samples and samples[-1][1] > 0:
            last_change = next((t for t, n in reversed(samples) if n < samples[-1][1]), None)
            moved_at = next((t for t, n in samples if n == samples[-1][1]), samples[-1][0])
            if last_change is not None and samples[-1][0] - moved_at > stall_s:
                raise Stalled(
                    f"{group} stopped committing {topic} at {samples[-1][1]} of {target} records "
                    f"(nothing for {stall_s:.0f}s)",
                    samples,
                    behind(bootstrap, group, topic),
                )
        try:
            done = committed_total(bootstrap, group, topic, partitions) - base
        except Exception:  # noqa: BLE001 - coordinator loading or moving: ask again
            time.sleep(interval)
            continue
        now = time.monotonic()
        samples.append((now, done))
        if on_sample is not None:
            on_sample(now, done)
        if done >= target:
            return samples
        if alive is not None and not alive():
            raise RuntimeError(f"the consumer of {topic} exited after {done} of {target} records")
        if now > deadline:
            raise TimeoutError(f"{group} committed {done} of {target} records of {topic} in {timeout:.0f}s")
        time.sleep(interval)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """`ringback.dev.waiting.wait_for`, failing with TimeoutError (the figures catch it)."""
    return wait_for(predicate, timeout, interval, what, error=TimeoutError)


def group_members(bootstrap: str, group: str) -> tuple[str, int, int]:
    """(state, members, members with partitions) of a consumer group."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    members = list(desc.members)
    assigned = sum(1 for m in members if m.assignment and m.assignment.topic_partitions)
    return str(desc.state).rsplit(".", 1)[-1], len(members), assigned


def new_namespace(prefix: str) -> str:
    return f"bench{uuid.uuid4().hex[:6]}{prefix}"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def read_records(
    bootstrap: str, topic: str, schema: str, timeout: float = 60.0
) -> list[tuple[bytes | None, dict, int]]:
    """Every record of a topic up to its end offsets now: (key, value decoded with `schema`,
    record timestamp in ms); tombstones and records that do not decode are left out."""
    from confluent_kafka import Consumer, TopicPartition

    from ringback.schemas import codec

    ends = end_offsets(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    out: list[tuple[bytes | None, dict, int]] = []
    try:
        remaining = {p: e for p, e in ends.items() if e > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in remaining])
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(10000, 1.0):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                if offset + 1 >= remaining.get(partition, 0):
                    remaining.pop(partition, None)
                value = msg.value()
                if value is None:
                    continue
                try:
                    record = codec.decode(schema, value)
                except ValueError:
                    continue
                out.append((msg.key(), record, msg.timestamp()[1]))
    finally:
        consumer.close()
    return out
