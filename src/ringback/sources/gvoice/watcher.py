"""`ringback gvoice watch`: Google Voice notification e-mails → call events, as they arrive.

Reads the mailbox (mailbox.py: IMAP, IDLE, polling as a fallback) from where the last run's
checkpoint (checkpoints.py) left off; each new message is read (notifications.py) into call
events for its practice, or dead-lettered with the raw message when it cannot be read; once
the broker acknowledged every record of a batch the checkpoint moves past it. Mapping,
setup and what is unverified: docs/providers/google-voice.md.

The practice of a message: the one whose phone_numbers include a number the message
names (the Google Voice number, when Google puts it there), else `--practice` (the
practice that owns the mailbox).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import NamedTuple

from imapclient.exceptions import IMAPClientError
from prometheus_client import Counter, Gauge

from ringback.clock import Clock
from ringback.config.secrets import read_secret
from ringback.config.settings import Settings
from ringback.domain.phones import region_of
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import AckedProducer, BrokerUnavailable
from ringback.observability.metrics import DEAD_LETTERS, declare_dead_letter_sources
from ringback.schemas import codec
from ringback.sources.gvoice.checkpoints import Checkpoint, checkpoint_key, load_checkpoint
from ringback.sources.gvoice.mailbox import Fetched, Mailbox, MailboxConfig
from ringback.sources.gvoice.notifications import Notification, Unreadable, call_events, read_notification

log = logging.getLogger(__name__)

# `source` of the watcher's dead letters and their `ringback_dead_letters_total{source}` label.
DEAD_LETTER_SOURCE = "gvoice"
DEAD_LETTER_RAW_MAX = 512 * 1024  # a voicemail's audio attachment can be large; the text comes first
# The password: a practice's `secrets` map may name it under this key, else this account-wide name.
PASSWORD_SECRET_KEY = "gvoice_imap_password"
PASSWORD_SECRET = "GVOICE_IMAP_PASSWORD"
BATCH = 50  # messages per produce-then-checkpoint round
RECONNECT_MAX_S = 60.0

MESSAGES = Counter("ringback_gvoice_messages_total", "Mailbox messages read, by what became of them", ["result"])
EVENTS = Counter("ringback_gvoice_events_total", "Call events produced from Google Voice e-mails", ["kind"])
CHECKPOINTS = Counter("ringback_gvoice_checkpoints_total", "Checkpoint records written")
UIDVALIDITY_CHANGES = Counter(
    "ringback_gvoice_uidvalidity_changes_total", "Times the watched folder was renumbered (UIDVALIDITY changed)"
)
UNREAD = Gauge("ringback_gvoice_unread_messages", "Messages in the folder after the checkpoint")
CONNECTED = Gauge("ringback_gvoice_connected", "1 while the watcher holds an IMAP connection")


class Output(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    kind: str  # the event's kind (missed_call, voicemail, transcription, sms), or "" for a dead letter


class GVoiceWatcher:
    """Follows one mailbox folder; see the module doc."""

    def __init__(
        self,
        env: Settings,
        directory: PracticeDirectory,
        producer: AckedProducer,
        config: MailboxConfig,
        practice_id: str | None = None,
        watcher_id: str | None = None,
        interval: float = 60.0,
        clock: Clock | None = None,
        from_beginning: bool = False,
        load: Callable[..., Checkpoint | None] = load_checkpoint,
        mailbox: Callable[[MailboxConfig], Mailbox] = Mailbox,
    ) -> None:
        self.env = env
        self.directory = directory
        self.producer = producer
        self.config = config
        self.practice_id = practice_id
        self.watcher_id = watcher_id or practice_id or config.user
        if "|" in self.watcher_id:
            raise ValueError("watcher id may not contain '|'")
        self.interval = interval
        self.clock = clock or Clock()
        self.from_beginning = from_beginning
        self._load = load
        self._mailbox_factory = mailbox
        self.mailbox: Mailbox | None = None
        self.checkpoint: Checkpoint | None = None
        self.call_topic = topics.topic_name(topics.CALL_EVENTS, env)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
        self.checkpoint_topic = topics.topic_name(topics.GVOICE_CHECKPOINTS, env)
        self._key = checkpoint_key(self.watcher_id, config.folder)
        self._stop = threading.Event()
        declare_dead_letter_sources([DEAD_LETTER_SOURCE])

    # -- connection and where to start
    async def start(self) -> None:
        self.checkpoint = await asyncio.to_thread(self._load, self.env, self.watcher_id, self.config.folder)
        if self.checkpoint is None:
            log.info("gvoice watcher %s: no checkpoint for %s", self.watcher_id, self.config.folder)

    async def connect(self) -> None:
        """Open the mailbox and settle where to read from (first start, UIDVALIDITY change)."""
        mailbox = self._mailbox_factory(self.config)
        await asyncio.to_thread(mailbox.open)
        self.mailbox = mailbox
        CONNECTED.set(1)
        cp = self.checkpoint
        if cp is None:
            last = 0 if self.from_beginning else mailbox.uidnext - 1
            await self._commit(Checkpoint(self.watcher_id, self.config.folder, mailbox.uidvalidity, last, 0, 0))
            log.info(
                "gvoice watcher %s: first start, reading %s from %s",
                self.watcher_id,
                self.config.folder,
                "its first message" if self.from_beginning else "the next new message",
            )
        elif cp.uidvalidity != mailbox.uidvalidity:
            UIDVALIDITY_CHANGES.inc()
            log.warning(
                "gvoice watcher %s: %s was renumbered (UIDVALIDITY %d -> %d): reading again every message "
                "received since the last one read; their events keep their ids, so none is acted on twice",
                self.watcher_id,
                self.config.folder,
                cp.uidvalidity,
                mailbox.uidvalidity,
            )
            uids = await asyncio.to_thread(mailbox.uids_since, cp.last_date_ms)
            await self._read(uids)
            # Older messages were read before the renumbering: resume after everything in the folder now.
            done = self.checkpoint if self.checkpoint and self.checkpoint.uidvalidity == mailbox.uidvalidity else cp
            last = max(mailbox.uidnext - 1, *uids) if uids else mailbox.uidnext - 1
            await self._commit(
                Checkpoint(self.watcher_id, self.config.folder, mailbox.uidvalidity, last, done.last_date_ms, 0)
            )

    def disconnect(self) -> None:
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None
        CONNECTED.set(0)

    # -- reading
    async def poll_once(self) -> int:
        """Read every message after the checkpoint; returns how many were read."""
        assert self.mailbox is not None and self.checkpoint is not None
        uids = await asyncio.to_thread(self.mailbox.uids_after, self.checkpoint.last_uid)
        UNREAD.set(len(uids))
        await self._read(uids)
        UNREAD.set(0)
        return len(uids)

    async def _read(self, uids: list[int]) -> None:
        assert self.mailbox is not None
        for i in range(0, len(uids), BATCH):
            fetched = await asyncio.to_thread(self.mailbox.fetch, uids[i : i + BATCH])
            if not fetched:
                continue
            results = []
            for message in fetched:
                outputs, result = self._outputs(message)
                results.append(result)
                await self._produce(outputs)
            last = fetched[-1]
            await self._commit(
                Checkpoint(
                    self.watcher_id,
                    self.config.folder,
                    self.mailbox.uidvalidity,
                    last.uid,
                    last.date_ms,
                    0,
                )
            )
            for result in results:
                MESSAGES.labels(result).inc()

    def _outputs(self, message: Fetched) -> tuple[list[Output], str]:
        """The records a message becomes, and what it counts as."""
        now = self.clock.now_ms()
        region = self._region()
        note = read_notification(message.raw, region)
        if isinstance(note, Unreadable):
            return [self._dead_letter(message, note.reason, now, self.practice_id)], "dead_letter"
        practice, called, why = self._practice_of(note)
        if practice is None:
            return [self._dead_letter(message, why, now, self.practice_id)], "dead_letter"
        key = topics.join_key(practice.id, note.caller)
        outputs = [
            Output(self.call_topic, key, codec.encode("call_event", event), _kind(event))
            for event in call_events(note, practice.id, called, now)
        ]
        return outputs, note.kind

    def _region(self) -> str:
        practice = self.directory.by_id(self.practice_id) if self.practice_id else None
        return region_of(practice.phone_numbers[0]) if practice else "US"

    def _practice_of(self, note: Notification) -> tuple[Practice | None, str, str]:
        """(practice, the number the call was for, why none)."""
        for number in note.numbers:
            owner = self.directory.by_number(number)
            if owner is None:
                continue
            if self.practice_id and owner.id != self.practice_id:
                return None, "", f"the Google Voice number belongs to practice {owner.id!r}, not {self.practice_id!r}"
            return owner, number, ""
        practice = self.directory.by_id(self.practice_id) if self.practice_id else None
        if practice is None:
            why = (
                f"practice {self.practice_id!r} is not in the config topic"
                if self.practice_id
                else "no number of a practice in the message and no --practice"
            )
            return None, "", why
        return practice, practice.phone_numbers[0], ""

    def _dead_letter(self, message: Fetched, reason: str, now: int, practice_id: str | None) -> Output:
        record = {
            "source": DEAD_LETTER_SOURCE,
            "reason": f"{self.config.folder} UID {message.uid}: {reason}"
            + (" (message cut)" if len(message.raw) > DEAD_LETTER_RAW_MAX else ""),
            "raw": message.raw[:DEAD_LETTER_RAW_MAX],
            "content_type": "message/rfc822",
            "received_at": now,
            "practice_id": practice_id,
        }
        return Output(self.dead_topic, DEAD_LETTER_SOURCE.encode(), codec.encode("dead_letter", record), "")

    async def _produce(self, outputs: list[Output]) -> None:
        """Send a message's records in order (a transcript before its call) and wait for every
        acknowledgement; BrokerUnavailable when one is missing (the batch is read again)."""
        sends = [self.producer.send(o.topic, o.key, o.value) for o in outputs]  # produced in this order
        results = await asyncio.gather(*sends, return_exceptions=True)
        for output, result in zip(outputs, results, strict=True):
            if isinstance(result, BaseException):
                raise result if isinstance(result, BrokerUnavailable) else BrokerUnavailable(str(result))
            if output.topic == self.call_topic:
                EVENTS.labels(output.kind).inc()
            else:
                DEAD_LETTERS.labels(DEAD_LETTER_SOURCE).inc()

    async def _commit(self, cp: Checkpoint) -> None:
        cp = Checkpoint(cp.watcher_id, cp.folder, cp.uidvalidity, cp.last_uid, cp.last_date_ms, self.clock.now_ms())
        await self.producer.send(self.checkpoint_topic, self._key, cp.encode(), partition=0)
        self.checkpoint = cp
        CHECKPOINTS.inc()

    # -- the loop
    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        await self.start()
        backoff = 1.0
        stopper = asyncio.create_task(_set_when(stop, self._stop))
        try:
            while not stop.is_set():
                try:
                    if self.mailbox is None:
                        await self.connect()
                        backoff = 1.0
                    await self.poll_once()
                    if ready:
                        ready()  # after the first read: anything delivered from now on is read
                        ready = None
                    await asyncio.to_thread(self.mailbox.wait, self.interval, self._stop)  # type: ignore[union-attr] # connected above
                except BrokerUnavailable as exc:
                    log.warning(
                        "gvoice watcher %s: broker did not acknowledge (%s); reading again", self.watcher_id, exc
                    )
                    # Reconnect: connect() decides again where to read (first start, renumbered folder).
                    self.disconnect()
                    await _sleep_or_stop(stop, 1.0)
                except (IMAPClientError, OSError, ConnectionError) as exc:
                    log.warning(
                        "gvoice watcher %s: mailbox connection failed (%s: %s); reconnecting in %.0fs",
                        self.watcher_id,
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                    self.disconnect()
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, RECONNECT_MAX_S)
        finally:
            stopper.cancel()
            self.disconnect()


def _kind(event: dict) -> str:
    if event["event_type"] == "CALL":
        return "missed_call" if event["outcome"] == "MISSED" else "voicemail"
    return "transcription" if event["event_type"] == "TRANSCRIPTION" else "sms"


async def _set_when(stop: asyncio.Event, flag: threading.Event) -> None:
    await stop.wait()
    flag.set()  # ends an IDLE in its thread within IDLE_CHECK_S


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def mailbox_password(env: Settings, practice: Practice | None, secret_name: str | None = None) -> str:
    """The mailbox password from the secrets (env var or secrets-dir file), never an option."""
    name = secret_name or (practice.secrets.get(PASSWORD_SECRET_KEY) if practice else None) or PASSWORD_SECRET
    value = read_secret(name, env)
    if not value:
        raise LookupError(f"no mailbox password: set the secret {name} (environment or secrets directory)")
    return value


def run(
    env: Settings,
    practice_id: str | None,
    host: str,
    user: str,
    port: int = 993,
    tls: bool = True,
    ca_file: str | None = None,
    folder: str = "INBOX",
    interval: float = 60.0,
    watcher_id: str | None = None,
    from_beginning: bool = False,
    password_secret: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """`ringback gvoice watch`: follow the config topic, then the mailbox until SIGTERM/SIGINT."""
    from pathlib import Path

    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    admin.ensure_topics(env, topics.GVOICE)  # and its principal may read and write what it does
    directory = PracticeDirectory().followed_to_end(env)
    try:
        practice = directory.require(practice_id) if practice_id else None
    except LookupError:
        directory.close()
        raise
    config = MailboxConfig(
        host=host,
        user=user,
        password=mailbox_password(env, practice, password_secret),
        port=port,
        tls=tls,
        ca_file=Path(ca_file) if ca_file else None,
        folder=folder,
    )
    producer = AckedProducer(client_config(env))
    watcher = GVoiceWatcher(
        env,
        directory,
        producer,
        config,
        practice_id=practice_id,
        watcher_id=watcher_id,
        interval=interval,
        from_beginning=from_beginning,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await watcher.run(
            stop,
            ready=lambda: log.info(
                "gvoice watcher ready: %s on %s:%d for %s (%s)",
                folder,
                host,
                port,
                practice_id or "the practices its messages name",
                "IDLE" if watcher.mailbox and watcher.mailbox.idle_supported else f"polling every {interval:.0f}s",
            ),
        )

    try:
        asyncio.run(main())
    finally:
        producer.close()
        directory.close()
