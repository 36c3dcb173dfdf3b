"""`ringback demo`: a practice day of a small health system, compressed to about a minute.

Starts (or reuses, with KAFKA_BOOTSTRAP_SERVERS) a broker; writes and publishes a demo
practices file (windows scaled to the speed); runs the gateway, a stream worker, the
sinks, a CDR poller per legacy-PBX practice, a Google Voice mailbox watcher per Google
Voice practice (with an IMAP server, dovecot, when it is installed; else that practice's
calls come as audit-log exports, imported during the day), an HL7 v2 listener per practice
and the staff console as separate processes, with local stand-ins so nothing leaves the
machine (Twilio and Slack: `ringback.dev.fake_apis`; e-mail: an aiosmtpd server in this
process); sends the morning's EHR (patients and appointments over HL7 v2, flags over FHIR:
`simulator/hl7_feed.py`); plays the simulated day (`ringback.dev.simulator`) with a progress line;
waits for the day's cases to close; prints the KPI report (`ringback.report`) in
practice time next to the reference practice's manual baseline, and one
machine-readable `DEMO-SUMMARY {json}` line. Everything it started is stopped at the
end, on Ctrl-C and on SIGTERM. Everything it writes (practices file, secrets, logs,
the broker's folder) goes into its run folder: --data-dir, else a new folder under the
per-user data folder; the processes it starts run there too. docs/demo.md has the details.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import json
import logging
import math
import os
import secrets as secrets_lib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml

from ringback.config import user_dirs
from ringback.config.practices_file import parse_practices
from ringback.config.settings import Settings
from ringback.dev import imap_server
from ringback.dev.child_process import die_with_parent
from ringback.dev.fake_apis import FakeApiServer
from ringback.dev.local_kafka import KafkaError, LocalKafka, free_port
from ringback.domain.practice import Practice

if TYPE_CHECKING:
    from ringback.dev.simulator.hl7_feed import Hl7EhrFeed
    from ringback.kafka.producer import AckedProducer

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password-1"
CONSOLE_ROLES = (
    "scheduling_coordinator",
    "scheduling_queue",
    "nurse",
    "assigned_provider",
    "department_manager",
    "admin_team",
)
PARTITIONS = 4
SUMMARY_PREFIX = "DEMO-SUMMARY "
FIRST_RESPONSE_STEPS = ("first_sms", "ack_sms", "reschedule_sms")
# What manual call-log review achieves at the reference practice (docs/product.md).
MANUAL = {"new_patient_recovery": 0.40, "call_to_booking_s": 6.2 * 3600, "first_response_s": (4 * 3600, 6 * 3600)}


_Service = TypeVar("_Service")


class DemoError(RuntimeError):
    """A service did not come up (the message says which, and where its log is)."""


@dataclass
class DemoOptions:
    practices: int = 6
    seed: int = 7
    speed: float = 600.0
    calls: int = 94
    keep_running: bool = False
    run_dir: Path | None = None


# ---------------------------------------------------------------- local stand-ins
def _mail_text(envelope) -> str:
    """The text of an e-mail the SMTP stand-in received (decoded: a long line may be quoted-printable)."""
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else ""


class SmtpStandIn:
    """An SMTP server in this process (aiosmtpd): staff e-mails stay on the machine."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list = []
        outer = self
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
                outer.messages.append(envelope)
                return "250 Message accepted for delivery"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=off"

    def close(self) -> None:
        self._controller.stop()


class OutcomeReader:
    """Reads the outcome topic from its start, in the background: the progress line counts
    from it, the tail waits for the cases to close, and the report is computed from it."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from ringback.kafka.connection import librdkafka

        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finals: set[str] = set()
        self._opened: set[str] = set()
        self._converted: set[str] = set()
        self._tasks: set[str] = set()
        self._consumer = Consumer(
            {**librdkafka(bootstrap), "group.id": f"demo-reader-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self._thread = threading.Thread(target=self._run, name="outcome-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ringback.schemas import codec

        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            value = None if msg is None or msg.error() else msg.value()
            if value is None:
                continue
            try:
                record = codec.decode("outcome", value)
            except ValueError:
                continue
            with self._lock:
                self.records.append(record)
                if record.get("record_type", "CASE") == "ACTION":
                    if record.get("action_kind") == "CREATE_TASK" and record.get("action_result") == "SENT":
                        self._tasks.add(record.get("action_id") or "")
                    continue
                self._opened.add(record["case_id"])
                if record["final"]:
                    self._finals.add(record["case_id"])
                if record.get("converted"):
                    self._converted.add(record["case_id"])

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "cases": len(self._opened),
                "closed": len(self._finals),
                "converted": len(self._converted),
                "tasks": len(self._tasks),
            }

    def closed(self, case_ids: set[str]) -> int:
        with self._lock:
            return len(case_ids & self._finals)

    def all_records(self) -> list[dict]:
        with self._lock:
            return list(self.records)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


# ---------------------------------------------------------------- progress line
class Progress:
    """One line updated in place on a terminal (click's progress bar); on anything else a
    plain line at every tenth of the day."""

    def __init__(self, total_s: float, label: str, out, describe: Callable[[float], str]) -> None:
        import click

        self.total_s = max(total_s, 0.001)
        self.out = out
        self.describe = describe
        self.tty = hasattr(out, "isatty") and out.isatty()
        self._last_tenth = -1
        self._bar = None
        self._pos = 0
        if self.tty:
            self._bar = click.progressbar(
                length=1000, label=label, file=out, show_eta=False, width=24, item_show_func=lambda item: item
            )
            self._bar.__enter__()

    def update(self, elapsed_s: float) -> None:
        fraction = min(1.0, max(0.0, elapsed_s / self.total_s))
        text = self.describe(elapsed_s)
        if self._bar is not None:
            pos = int(fraction * 1000)
            self._bar.update(pos - self._pos, current_item=text)
            self._pos = pos
            return
        tenth = int(fraction * 10)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            print(f"  {int(fraction * 100):3d}%  {text}", file=self.out, flush=True)

    def finish(self, elapsed_s: float) -> None:
        self.update(elapsed_s)
        self.close()

    def close(self) -> None:
        """End the line (and give the terminal its cursor back), also when interrupted."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


# ---------------------------------------------------------------- the demo
@dataclass
class _Timings:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.started, 1)


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO | None = None) -> None:
        self.o = options
        self.out = out or sys.stdout
        self.t = _Timings()
        self.procs: dict[str, subprocess.Popen] = {}
        self.broker: LocalKafka | None = None
        # Started one by one during the run; None until then (the clean-up stops what was started).
        self._fake_apis: FakeApiServer | None = None
        self._smtp: SmtpStandIn | None = None
        self._reader: OutcomeReader | None = None
        self.ehr: Hl7EhrFeed | None = None
        self.imap: imap_server.ImapServer | None = None  # the Google Voice practices' mailbox (e-mail path)
        self._audit_producer: AckedProducer | None = None  # their audit-log imports (the other path)
        self.run_dir = options.run_dir or user_dirs.data_path("demo", user_dirs.run_name())

    @property
    def fake_apis(self) -> FakeApiServer:
        """Twilio's Messages API and Slack's webhooks (`environment` starts it)."""
        return _started(self._fake_apis, "the fake Twilio/Slack server")

    @property
    def smtp(self) -> SmtpStandIn:
        return _started(self._smtp, "the SMTP stand-in")

    @property
    def _ehr_feed(self) -> Hl7EhrFeed:
        return _started(self.ehr, "the EHR feed")

    @property
    def reader(self) -> OutcomeReader:
        return _started(self._reader, "the outcome reader")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------ set-up
    def prepare(self) -> None:
        from ringback.dev.simulator import GV_AUDIT, GV_EMAIL, Day, demo_practices, plan_day, sites_for
        from ringback.dev.simulator.practices import SECRET_NAMES, SLACK_SECRET
        from ringback.dev.simulator.render import Secrets

        self.run_dir.mkdir(parents=True, exist_ok=True)
        data, providers = demo_practices(self.o.practices, self.o.speed)
        self.practices_file = self.run_dir / "practices.yaml"
        self.practices_file.write_text(
            "# Written by `ringback demo`: windows scaled to a day running "
            f"{self.o.speed:g}x faster (docs/demo.md).\n" + yaml.safe_dump(data, sort_keys=False)
        )
        self.practices: list[Practice] = parse_practices(data).practices
        self.by_id = {p.id: p for p in self.practices}
        self.providers = dict(zip((p.id for p in self.practices), providers, strict=True))
        self.day = Day(speed=self.o.speed)
        # Google Voice: its e-mails over IMAP when dovecot can serve the mailbox, else its audit-log exports.
        if imap_server.available():
            self.gvoice_via, self.gvoice_why = GV_EMAIL, f"dovecot is installed ({imap_server.DOVECOT})"
        else:
            self.gvoice_via = GV_AUDIT
            self.gvoice_why = "dovecot is not installed (Debian: apt-get install dovecot-imapd), so no IMAP mailbox"
        self.sites = sites_for(self.practices, providers, calls=self.o.calls, gvoice_via=self.gvoice_via)
        self.plan = plan_day(self.o.seed, self.sites, self.day)
        # Secrets: values in the demo's secrets folder, as `secrets` in the practices file names them.
        self.secrets = Secrets(**{p: f"demo-{p}-{secrets_lib.token_hex(12)}" for p in SECRET_NAMES})
        self.secrets_dir = self.run_dir / "secrets"
        self.secrets_dir.mkdir(exist_ok=True)
        for provider, (_, name) in SECRET_NAMES.items():
            if name != "TWILIO_AUTH_TOKEN":  # the account-wide token comes from the environment
                (self.secrets_dir / name).write_text(self.secrets.of(provider))
        self.slack_secret = SLACK_SECRET

    def start_broker(self) -> str:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            self.say(f"· using the Kafka broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
            return bootstrap
        self.broker = LocalKafka(port=free_port(), home=self.run_dir / "kafka")
        self.say(f"· starting a local Kafka broker ({self.broker.bootstrap}) …")
        t0 = time.monotonic()
        self.broker.start(die_with_parent=True)
        self.say(f"  broker ready in {time.monotonic() - t0:.1f} s")
        return self.broker.bootstrap

    def environment(self, bootstrap: str) -> None:
        from ringback.dev.simulator import webhooks

        self._fake_apis = FakeApiServer()
        self._smtp = SmtpStandIn()
        self.namespace = f"demo{uuid.uuid4().hex[:8]}"
        # Per namespace: a --data-dir used again must not hand this run the last one's EHR cursors.
        self.state_dir = self.run_dir / "state" / self.namespace
        self.gateway_port, self.console_port = free_port(), free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.console_url = f"http://127.0.0.1:{self.console_port}"
        (self.secrets_dir / self.slack_secret).write_text(self.fake_apis.url + "/slack/demo-manager-channel")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RINGBACK_", "TWILIO_", "SMTP_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "RINGBACK_NAMESPACE": self.namespace,
                "RINGBACK_PARTITIONS": str(PARTITIONS),
                "RINGBACK_STATE_DIR": str(self.state_dir),
                "RINGBACK_SECRETS_DIR": str(self.secrets_dir),
                "RINGBACK_STORE": "memory://",
                "RINGBACK_SINKS_STORE": "memory://",
                "RINGBACK_PUBLIC_URL": self.gateway_url,
                "RINGBACK_CONSOLE_URL": self.console_url,  # staff e-mails and Slack posts link to the demo's console
                "TWILIO_ACCOUNT_SID": webhooks.ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": self.secrets.twilio,
                "TWILIO_API_BASE_URL": self.fake_apis.url,
                "SMTP_URL": self.smtp.url,
                "RINGBACK_SMTP_FROM": "ringback-demo@localhost",
                "RINGBACK_WORKER_WEB_PORT": str(free_port()),
                "RINGBACK_SINKS_METRICS_PORT": str(free_port()),
                "RINGBACK_CONSOLE_SECRET": secrets_lib.token_hex(24),
                "RINGBACK_LOG_LEVEL": os.environ.get("RINGBACK_LOG_LEVEL", "INFO"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env = env
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            ringback_namespace=self.namespace,
            ringback_partitions=PARTITIONS,
            ringback_state_dir=self.state_dir,
            ringback_secrets_dir=self.secrets_dir,
        )

    def ringback(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.run_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringback.cli", *args],
            env=self.env,
            cwd=str(self.run_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def apply_config(self) -> None:
        self.say(f"· publishing the demo practices file ({self.practices_file}) …")
        done = subprocess.run(
            [sys.executable, "-m", "ringback.cli", "config", "apply", str(self.practices_file)],
            env=self.env,
            cwd=str(self.run_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise DemoError(f"`ringback config apply` failed:\n{done.stdout}{done.stderr}")
        from ringback.clock import Clock
        from ringback.console.users import UserStore, users_path

        store = UserStore(users_path(self.settings))
        for p in self.practices:
            store.add(p.id, DEMO_USER, DEMO_PASSWORD, list(CONSOLE_ROLES), Clock().now_ms(), replace=True)

    def start_services(self) -> None:
        from ringback.dev.simulator import GV_EMAIL, GVOICE

        cdr_sites = [pid for pid, provider in self.providers.items() if provider == "cdr"]
        self.gvoice_sites = [pid for pid, provider in self.providers.items() if provider == GVOICE]
        watchers = self.gvoice_sites if self.gvoice_via == GV_EMAIL else []
        names = ", ".join(
            ["the gateway", "a stream worker", "the sinks", "the staff console"]
            + [f"a CDR poller ({pid})" for pid in cdr_sites]
            + [f"a Google Voice mailbox watcher ({pid})" for pid in watchers]
            + [f"an HL7 v2 listener per practice ({len(self.practices)})"]
        )
        self.say(f"· starting {names} …")
        self.ringback("gateway", "ingest", "--host", "127.0.0.1", "--port", str(self.gateway_port))
        self.ringback("worker", "worker")
        self.ringback("sinks", "sinks")
        self.ringback("console", "console", "--host", "127.0.0.1", "--port", str(self.console_port))
        self.cdr_dirs: dict[str, Path] = {}
        for pid in cdr_sites:
            folder = self.run_dir / "pbx" / pid
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "Master.csv").touch()
            self.cdr_dirs[pid] = folder
            self.ringback(
                f"cdr-{pid}", "cdr", "poll", str(folder), "--practice", pid, "--interval", "0.1", "--from-beginning"
            )
        if watchers:
            self._start_mailbox(watchers)
        elif self.gvoice_sites:
            from ringback.kafka.connection import client_config
            from ringback.kafka.producer import AckedProducer

            self._audit_producer = AckedProducer(client_config(self.settings), timeout_s=10)
        for pid in self.gvoice_sites:
            how = (
                "its notification e-mails, read over IMAP by `ringback gvoice watch`"
                if watchers
                else "the Admin console's audit-log export, a CSV every 15 practice minutes, imported as by "
                "`ringback gvoice import`"
            )
            self.say(f"· Google Voice at {pid}: {how}; because {self.gvoice_why}")
        # The EHR's interface engine sends each practice's ADT and SIU messages to its own listener.
        self.hl7_listeners: dict[str, tuple[str, int]] = {}
        for practice in self.practices:
            port = free_port()
            self.hl7_listeners[practice.id] = ("127.0.0.1", port)
            address = ["--host", "127.0.0.1", "--port", str(port)]
            self.ringback(f"hl7-{practice.id}", "ehr", "hl7", *address, "--practice", practice.id)

    def _start_mailbox(self, practice_ids: list[str]) -> None:
        """dovecot with a folder per Google Voice practice, and a `gvoice watch` on each folder."""
        # Not in the run folder: dovecot's mail processes run as the `dovecot` user when the demo runs
        # as root, and the per-user data folder's parents are private.
        self.imap = imap_server.ImapServer(Path(tempfile.mkdtemp(prefix="ringback-demo-imap-")), die_with_parent=True)
        self.imap.start()
        (self.secrets_dir / "GVOICE_IMAP_PASSWORD").write_text(imap_server.PASSWORD)
        for pid in practice_ids:
            self.imap.ensure_folder(pid)
            self.ringback(
                f"gvoice-{pid}",
                "gvoice",
                "watch",
                "--practice",
                pid,
                "--host",
                self.imap.host,
                "--port",
                str(self.imap.port),
                "--user",
                imap_server.USER,
                "--ca-file",
                str(self.imap.ca_file),
                "--folder",
                pid,
                "--interval",
                "1",
            )

    async def _deliver_mail(self, practice_id: str, raw: bytes) -> None:
        """Google Voice sends a notification: into the practice's folder (IMAP APPEND)."""
        server = _started(self.imap, "the IMAP server")
        await asyncio.to_thread(server.deliver, raw, folder=practice_id)

    async def _import_audit(self, practice_id: str, text: str) -> None:
        """An audit-log export: written to <run>/gvoice-audit/<practice>/ and published with the importer's
        own code (what `ringback gvoice import` runs once it has read the practice; no process start-up
        per batch, which would add seconds, i.e. practice hours at the demo's speed)."""
        from ringback.sources.gvoice import audit_log

        producer = _started(self._audit_producer, "the audit-log producer")
        folder = self.run_dir / "gvoice-audit" / practice_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"export-{len(list(folder.iterdir())) + 1:03d}.csv"
        path.write_text(text)
        ctx = audit_log.Practiced.of(self.by_id[practice_id])
        await audit_log.publish(producer, self.settings, text, path.name, ctx, int(time.time() * 1000))

    def _alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DemoError(
                    f"`ringback {name}` exited with {proc.returncode}; see {self.run_dir / (name + '.log')}"
                )

    def wait(self, what: str, predicate: Callable[[], object], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            try:
                if predicate():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.run_dir}")

    def _committed_all(self, group: str, topic: str, at_end: bool) -> bool:
        """Has the group committed offsets on every partition (at the end of each, if `at_end`)?"""
        from confluent_kafka import Consumer, TopicPartition

        from ringback.kafka.connection import client_config

        consumer = Consumer({**client_config(self.settings), "group.id": group, "enable.auto.commit": False})
        try:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=5)}
            for p in range(PARTITIONS):
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                if at_end and high > 0 and committed.get(p, -1) < high:
                    return False
                if not at_end and committed.get(p, -1) < 1:
                    return False
            return True
        finally:
            consumer.close()

    def wait_hl7_listeners(self) -> None:
        """Each listener opens its port once ready (state loaded, answered control ids read back)."""
        for pid in self.hl7_listeners:
            self.wait(f"the HL7 v2 listener of {pid}", functools.partial(self._hl7_listener_ready, pid), 120)

    def _hl7_listener_ready(self, practice_id: str) -> bool:
        return "hl7 listener ready" in (self.run_dir / f"hl7-{practice_id}.log").read_text(errors="replace")

    async def _morning(self) -> str:
        """The morning's EHR: patients and appointments over the HL7 v2 feed, flags over FHIR
        (`simulator/hl7_feed.py`); what went which way, for the output line."""
        from ringback.dev.simulator import EhrFeed, Player, Targets
        from ringback.dev.simulator.hl7_feed import Hl7EhrFeed

        self.ehr = Hl7EhrFeed(self.hl7_listeners, self.by_id, EhrFeed(self.settings, self.by_id))
        self.player = Player(self.plan, self.by_id, self.secrets, Targets(ehr=self.ehr))
        await self.player.preload()
        return self._ehr_counts()

    def _ehr_counts(self) -> str:
        counts = self._ehr_feed.counts
        hl7 = {what: n for (path, what), n in sorted(counts.items()) if path == "hl7"}
        return (
            f"{sum(hl7.values())} HL7 v2 messages over MLLP to `ringback ehr hl7`, each answered AA "
            f"({', '.join(f'{n} {what}' for what, n in hl7.items())}); {counts['fhir', 'Flag']} Flags through the "
            f"FHIR connector ({counts['fhir', 'flag records']} flag records; HL7 v2 has no flag)"
        )

    def wait_ready(self) -> None:
        ns = self.namespace
        self.wait("the gateway (/readyz)", lambda: httpx.get(f"{self.gateway_url}/readyz").status_code == 200, 120)
        self.wait(
            "the staff console (/readyz)", lambda: httpx.get(f"{self.console_url}/readyz").status_code == 200, 120
        )
        self.wait(
            "the stream worker to own every partition",
            lambda: self._committed_all(f"{ns}-streams", f"{ns}.stream-ticks", at_end=False),
            180,
        )
        for suffix in ("patients", "flags", "appointments"):
            self.wait(
                f"the stream worker to read the EHR ({suffix})",
                functools.partial(self._committed_all, f"{ns}-streams", f"{ns}.{suffix}", at_end=True),
                120,
            )
        self.wait(
            "the sinks to own every partition",
            lambda: self._committed_all(f"{ns}-sinks", f"{ns}.sinks-ticks", at_end=False),
            180,
        )
        for pid in self.cdr_dirs:
            self.wait(f"the CDR poller of {pid}", functools.partial(self._cdr_poller_ready, pid), 120)
        for name in (n for n in self.procs if n.startswith("gvoice-")):
            self.wait(
                f"the Google Voice watcher {name}", functools.partial(self._logged, name, "gvoice watcher ready"), 120
            )

    def _cdr_poller_ready(self, practice_id: str) -> bool:
        return self._logged(f"cdr-{practice_id}", "cdr poller ready")

    def _logged(self, name: str, text: str) -> bool:
        return text in (self.run_dir / f"{name}.log").read_text(errors="replace")

    # ------------------------------------------------------------ the day
    def _sms_actions(self) -> list[tuple[str, str, str]]:
        """(practice, recipient, action id) of each distinct SMS the Twilio stand-in received."""
        seen: dict[str, tuple[str, str, str]] = {}
        for m in self.fake_apis.messages():
            query = parse_qs(urlsplit(m.form.get("StatusCallback", "")).query)
            action = (query.get("action") or [""])[0]
            practice = (query.get("practice") or [""])[0]
            key = action or f"untracked:{len(seen)}"
            seen.setdefault(key, (practice, m.form.get("To", ""), action))
        return list(seen.values())

    def _sms_received(self, practice_id: str, phone: str) -> bool:
        return any(m.form.get("To") == phone for m in self.fake_apis.messages())

    async def _carrier(self, stop: asyncio.Event) -> None:
        """Twilio's side of each SMS: a signed delivery receipt to the callback URL it was given."""
        from ringback.dev.simulator import webhooks

        done: set[str] = set()
        async with httpx.AsyncClient(timeout=10) as http:
            while not stop.is_set():
                created = list(self.fake_apis.created)
                for resource in created:
                    if resource["sid"] in done:
                        continue
                    done.add(resource["sid"])
                    request = next(
                        (
                            m
                            for m in self.fake_apis.messages()
                            if m.form.get("To") == resource["to"]
                            and m.form.get("Body") == resource["body"]
                            and m.form.get("StatusCallback")
                        ),
                        None,
                    )
                    if request is None:
                        continue
                    url = urlsplit(request.form["StatusCallback"])
                    params = webhooks.twilio_sms_status(
                        resource["sid"], resource["to"], resource["from"] or "", "delivered"
                    )
                    hook = webhooks.twilio(
                        f"{url.scheme}://{url.netloc}", f"{url.path}?{url.query}", params, self.secrets.twilio
                    )
                    try:
                        await http.post(request.form["StatusCallback"], content=hook.body, headers=hook.headers)
                    except httpx.HTTPError:
                        pass
                try:
                    await asyncio.wait_for(stop.wait(), 0.3)
                except TimeoutError:
                    pass

    def _describe(self, played: Counter) -> Callable[[float], str]:
        def text(elapsed: float) -> str:
            snap = self.reader.snapshot()
            return (
                f"{self.day.clock(elapsed)}  calls {played['calls']} · missed {played['missed']} · "
                f"SMS {len(self._sms_actions())} · tasks {snap['tasks']} · cases {snap['cases']} · "
                f"converted {snap['converted']}"
            )

        return text

    async def _play_day(self) -> None:
        from ringback.dev.simulator import CALL, Day, Player, Targets, plan_day

        played: Counter = Counter()

        def on_event(event, result) -> None:
            if event.kind == CALL:
                played["calls"] += 1
                played["missed" if event.outcome != "ANSWERED" else "answered"] += 1

        targets = Targets(
            gateway_url=self.gateway_url,
            cdr_dirs=self.cdr_dirs,
            ehr=self.ehr,
            console_url=self.console_url,
            console_login=(DEMO_USER, DEMO_PASSWORD),
            sms_received=self._sms_received,
            gvoice_mail=self._deliver_mail if self.imap is not None else None,
            gvoice_import=self._import_audit if self._audit_producer is not None else None,
        )
        # A whole second: calls of providers with 1-second timestamps (Twilio, CDR) fall just after one.
        self.day_start = float(math.ceil(time.time()) + 1)
        # The same day planned for this start: audit-log rows carry the calls' times, their ids derive from them.
        self.day = Day(speed=self.o.speed, start=self.day_start)
        self.plan = plan_day(self.o.seed, self.sites, self.day)
        self.player = Player(self.plan, self.by_id, self.secrets, targets, on_event=on_event)
        total = max(self.day.length_s, self.plan.length_s)
        progress = Progress(total, "practice day", self.out, self._describe(played))
        stop = asyncio.Event()
        carrier = asyncio.create_task(self._carrier(stop))
        play = asyncio.create_task(self.player.play(start=self.day_start))
        try:
            while not play.done():
                progress.update(max(0.0, time.time() - self.day_start))
                await asyncio.wait([play], timeout=0.25)
            progress.finish(total)
            self.play_result = play.result()
            # The tail: the last cases close when their (scaled) 6 h expiry passes.
            case_ids = {c.case_id for c in self.plan.cases}
            expiry = max(p.windows.case_expiry for p in self.practices)
            last_missed = max((c.missed_at for c in self.plan.cases), default=0.0)
            deadline = self.day_start + last_missed + expiry + 30
            self.say(
                f"· the day is over; waiting for the last of {len(case_ids)} cases to close "
                f"(cases expire {expiry} s = {expiry * self.o.speed / 3600:.0f} practice hours after the call) …"
            )
            while self.reader.closed(case_ids) < len(case_ids) and time.time() < deadline:
                self._alive()
                await asyncio.sleep(0.5)
            # Let the sinks finish what the last records asked for (receipts, last tasks).
            await asyncio.sleep(2.0)
        finally:
            progress.close()
            stop.set()
            await carrier
            if not play.done():
                play.cancel()

    # ------------------------------------------------------------ the report
    def _practice_time(self, record: dict) -> dict:
        """A record with its times moved from the compressed wall clock to practice time."""
        t0, p0, speed = int(self.day_start * 1000), self.day.practice_ms(0), self.o.speed
        out = dict(record)
        for key in ("missed_at", "at", "first_response_at", "converted_at"):
            if out.get(key) is not None:
                out[key] = int(p0 + (out[key] - t0) * speed)
        if out.get("response_latency_ms") is not None:
            out["response_latency_ms"] = int(out["response_latency_ms"] * speed)
        return out

    def report(self) -> dict:
        from ringback.report import kpis as kpi
        from ringback.report import text as report_text

        records = [self._practice_time(r) for r in self.reader.all_records()]
        p0 = self.day.practice_ms(0)
        as_of = int(p0 + (time.time() - self.day_start) * 1000 * self.o.speed)
        since, until = p0 - 8 * 3_600_000, p0 + 16 * 3_600_000
        total = kpi.build_report(records, since_ms=since, until_ms=until, as_of_ms=as_of)
        reference = kpi.build_report(
            records, since_ms=since, until_ms=until, as_of_ms=as_of, practice_id=self.practices[0].id
        )
        self.say()
        self.say(
            f"KPI report of the simulated day ({self.day.date}, 08:00-18:00; times are practice time: "
            f"wall clock x {self.o.speed:g})"
        )
        self.say("=" * 100)
        self.say(report_text.render_text(total).rstrip())
        self.say()
        self._reference_block(reference["total"], report_text)
        return total

    def _reference_block(self, m: dict, fmt) -> None:
        ref = self.practices[0]
        counts = self.plan.counts[ref.id]
        ttfr = m["time_to_first_response_s"]["median"]
        booking = m["call_to_booking_s"]["mean"]
        rec = m["new_patient_recovery"]
        lines = [
            f"The reference practice ({ref.name}: {counts['calls']} calls, {counts['missed']} missed) "
            "against its manual call-log review:",
            f"  {'':28}{'this demo day':>22}   {'manual review':>16}",
            f"  {'new-patient recovery':28}{fmt.human_share(rec):>22}   {'~40 % (35-45 %)':>16}",
            f"  {'first response, median':28}{fmt.human_duration(ttfr):>22}   {'4-6 h':>16}",
            f"  {'call to booking, mean':28}{fmt.human_duration(booking):>22}   {'6.2 h':>16}",
            "",
            "How to read it: patient behaviour is simulated (who replies, books, calls back: docs/demo.md), so",
            "recovery and call-to-booking restate the simulator's assumptions; the response times are measured,",
            f"then multiplied by {self.o.speed:g} (100 ms of processing shows as {self.o.speed / 10:g} s).",
        ]
        self.say("\n".join(lines))

    def summary(self, report: dict) -> dict:
        expected = self.plan.expected_sms_by_recipient()
        sent = self._sms_actions()
        sent_steps = Counter(a.rsplit(":", 1)[-1] if a else "untracked" for _, _, a in sent)
        sent_keys = Counter((p, to, a.rsplit(":", 1)[-1]) for p, to, a in sent)
        finals = {}
        for r in self.reader.all_records():
            if r.get("record_type", "CASE") == "CASE" and r["final"]:
                finals[r["case_id"]] = (r["state"], r.get("conversion_channel"))
        mismatched = []
        for case in self.plan.cases:
            got = finals.get(case.case_id)
            if got != (case.final_state, case.channel):
                mismatched.append(
                    f"{case.case} {case.scenario} {case.behaviour}: expected "
                    f"{case.final_state}/{case.channel}, got {got[0] + '/' + str(got[1]) if got else 'open'}"
                )
        total = report["total"]
        ttfr = total["time_to_first_response_s"]
        responded, sms_sent = [], []
        for r in self.reader.all_records():
            if (
                r.get("record_type", "CASE") == "CASE"
                and r["state"] == "RESPONDED"
                and r.get("response_latency_ms") is not None
            ):
                responded.append(r["response_latency_ms"])
            elif (
                r.get("action_kind") == "SEND_SMS"
                and r.get("action_result") == "SENT"
                and (r.get("action_id") or "").rsplit(":", 1)[-1] in FIRST_RESPONSE_STEPS
            ):
                sms_sent.append(r["at"] - r["missed_at"])
        unexpected = self.play_result.as_dict()["unexpected"]
        closed = len(set(finals) & {c.case_id for c in self.plan.cases})
        sms_ok = sent_keys == expected
        return {
            # Did the system do exactly what the plan expects of it (SMS, answers, every case closed)?
            "ok": sms_ok and not unexpected and closed == len(self.plan.cases),
            "plan": self.plan.summary(),
            "sms_expected": sum(expected.values()),
            "sms_sent": len(sent),
            "sms_expected_by_step": dict(sorted(self.plan.expected_sms().items())),
            "sms_sent_by_step": dict(sorted(sent_steps.items())),
            "first_responses_expected": sum(
                v for k, v in self.plan.expected_sms().items() if k in FIRST_RESPONSE_STEPS
            ),
            "first_responses_sent": sum(v for k, v in sent_steps.items() if k in FIRST_RESPONSE_STEPS),
            "sms_not_planned": sum((sent_keys - expected).values()),
            "sms_missing": sum((expected - sent_keys).values()),
            "sms_requests": len(self.fake_apis.messages()),
            "emails": len(self.smtp.messages),
            "emails_linking_a_task": sum(f"{self.console_url}/#task=" in _mail_text(m) for m in self.smtp.messages),
            "slack_posts": len(
                [r for r in self.fake_apis.requests if r.method == "POST" and r.path.startswith("/slack/")]
            ),
            "cases_expected": len(self.plan.cases),
            "cases_closed": closed,
            "cases_as_planned": len(self.plan.cases) - len(mismatched),
            "case_mismatches": mismatched[:30],
            "player": self.play_result.as_dict(),
            # Wall clock, not scaled: missed call (the provider's time) → first response decided by the
            # worker, and → the SMS accepted by the Twilio stand-in.
            "wall_ms_missed_call_to_first_response": _stats(responded),
            "wall_ms_missed_call_to_first_sms_sent": _stats(sms_sent),
            "kpi": {
                "cases": total["cases"],
                "answered_within_15min": total["answered_within_15min"]["share"],
                "new_patient_recovery": total["new_patient_recovery"]["share"],
                "first_response_median_s": ttfr["median"],
                "first_response_p90_s": ttfr["p90"],
                "call_to_booking_mean_s": total["call_to_booking_s"]["mean"],
                "appointments_recovered": total["appointments_recovered"],
                "escalations": total["escalations"],
            },
            "gvoice": {"practices": self.gvoice_sites, "path": self.gvoice_via, "why": self.gvoice_why},
            # What the EHR sent which way (morning and day): HL7 v2 messages answered AA, FHIR flags.
            "ehr": {f"{path} {what}": n for (path, what), n in sorted(self._ehr_feed.counts.items())},
            "namespace": self.namespace,
            "run_dir": str(self.run_dir),
            "timings_s": dict(self.t.marks),
        }

    # ------------------------------------------------------------ the whole run
    def run(self) -> int:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        # Ctrl-C raises where the demo is, as SIGTERM does. Left to asyncio.run, it only
        # cancels the running task, and a cancellation that some await swallows lets the
        # day play on (seen once: the demo finished its day and exited 0 after a Ctrl-C).
        signal.signal(signal.SIGINT, _raise_interrupt)
        try:
            self.prepare()
            bootstrap = self.start_broker()
            self.t.mark("broker")
            self.environment(bootstrap)
            self.apply_config()
            self.start_services()
            self.wait_hl7_listeners()
            began = time.monotonic()
            sent = asyncio.run(self._morning())
            self.say(f"· the EHR in the morning ({time.monotonic() - began:.1f} s): {sent}")
            self.t.mark("ehr")
            self.wait_ready()
            self.t.mark("services")
            self._reader = OutcomeReader(bootstrap, f"{self.namespace}.outcomes")
            summary = self.plan.summary()
            self.say(
                f"· staff console: {self.console_url}  (practice maple-family, user {DEMO_USER}, "
                f"password {DEMO_PASSWORD}; every practice has this user)"
            )
            self.say(
                f"· {summary['practices']} practices "
                f"({', '.join(f'{pid} on {prov}' for pid, prov in self.providers.items())}); "
                f"{summary['calls']} calls, {summary['missed']} missed, seed {self.o.seed}; "
                f"a 10-hour day in {self.day.length_s:.0f} s; logs in {self.run_dir}"
            )
            asyncio.run(self._play_day())
            self.t.mark("day")
            report = self.report()
            self.t.mark("total")
            summary = self.summary(report)
            self.say()
            self.say(
                f"SMS: {summary['sms_sent']} sent to patients through the Twilio stand-in "
                f"({summary['first_responses_sent']} first responses), {summary['sms_expected']} planned; "
                f"{summary['emails']} staff e-mails, {summary['slack_posts']} Slack alerts; "
                f"{summary['cases_as_planned']}/{summary['cases_expected']} cases ended as planned."
            )
            if summary["player"]["unexpected"]:
                self.say("Unexpected answers: " + "; ".join(summary["player"]["unexpected"][:5]))
            if not summary["ok"]:
                self.say(
                    f"Check: the services did not do exactly what the plan expects (SMS missing "
                    f"{summary['sms_missing']}, not planned {summary['sms_not_planned']}, cases closed "
                    f"{summary['cases_closed']}/{summary['cases_expected']}); see DEMO-SUMMARY and {self.run_dir}"
                )
            self.say(
                f"Wall time: {self.t.marks['total']:.0f} s (broker {self.t.marks['broker']:.0f} s, "
                f"services ready at {self.t.marks['services']:.0f} s, day and tail until {self.t.marks['day']:.0f} s)."
            )
            self.say(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True))
            if self.o.keep_running:
                self.say(
                    f"\nServices are still running: the console at {self.console_url} "
                    f"({DEMO_USER} / {DEMO_PASSWORD}), the gateway at {self.gateway_url}. Ctrl-C stops them."
                )
                while True:
                    self._alive()
                    time.sleep(1)
            return 0
        except KeyboardInterrupt:
            self.say("\ninterrupted: stopping everything the demo started …")
            return 130
        except (DemoError, KafkaError) as exc:
            self.say(f"\ndemo failed: {exc}")
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            try:
                self.cleanup()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous)

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        for closer in (self._reader, self.ehr, self._fake_apis, self._smtp, self._audit_producer):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001 - clean up the rest regardless
                    pass
        if self.imap is not None:  # a throwaway mailbox: keep its log only
            self.imap.stop()
            if (self.imap.home / "dovecot.log").exists():
                shutil.copy2(self.imap.home / "dovecot.log", self.run_dir / "dovecot.log")
            shutil.rmtree(self.imap.home, ignore_errors=True)
        if self.broker is not None:
            self.broker.stop()
            shutil.rmtree(self.broker.data_dir, ignore_errors=True)  # a throwaway broker: keep its logs only


def _stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def q(f: float) -> int:
        return ordered[min(len(ordered) - 1, int(f * len(ordered)))]

    return {"n": len(ordered), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": ordered[-1]}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _started(service: _Service | None, what: str) -> _Service:
    if service is None:
        raise DemoError(f"{what} is not started yet")
    return service


def run_demo(
    practices: int = 6,
    seed: int = 7,
    speed: float = 600.0,
    calls: int = 94,
    keep_running: bool = False,
    run_dir: Path | None = None,
) -> int:
    options = DemoOptions(
        practices=practices, seed=seed, speed=speed, calls=calls, keep_running=keep_running, run_dir=run_dir
    )
    return Demo(options).run()
