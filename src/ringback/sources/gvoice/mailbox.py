"""The mailbox that receives Google Voice's notifications, over IMAP (IMAPClient; blocking:
the watcher calls it from a thread).

The folder is opened read-only (EXAMINE): reading never marks mail as seen, moves or
deletes it, so people can keep using the mailbox. New mail is waited for with IDLE
(RFC 2177) when the server offers it, so a missed call is read within seconds; without
IDLE, or when IDLE breaks, the watcher polls every `interval`. TLS by default (implicit,
port 993); `ca_file` trusts a private CA.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from imapclient import IMAPClient

log = logging.getLogger(__name__)

# Servers drop an IDLE after 30 min (RFC 2177 asks clients to re-issue it before 29).
MAX_IDLE_S = 25 * 60
IDLE_CHECK_S = 1.0  # how often an IDLE looks at the stop flag
FETCH_BATCH = 25


@dataclass(frozen=True)
class MailboxConfig:
    host: str
    user: str
    password: str
    port: int = 993
    tls: bool = True
    ca_file: Path | None = None
    folder: str = "INBOX"
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    date_ms: int  # INTERNALDATE: when the server received it


class Mailbox:
    """One IMAP connection with the folder selected read-only."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self._client: IMAPClient | None = None
        self.uidvalidity = 0
        self.uidnext = 1
        self.idle_supported = False

    def open(self) -> None:
        cfg = self.config
        context = None
        if cfg.tls:
            context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.tls, ssl_context=context, timeout=cfg.timeout_s)
        try:
            client.login(cfg.user, cfg.password)
            status = client.select_folder(cfg.folder, readonly=True)
            self.uidvalidity = int(status[b"UIDVALIDITY"])
            self.uidnext = int(status.get(b"UIDNEXT") or 1)
            self.idle_supported = client.has_capability("IDLE")
        except Exception:
            _close_quietly(client)
            raise
        self._client = client

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise ConnectionError("mailbox not open")
        return self._client

    def uids_after(self, uid: int) -> list[int]:
        # A server may show a selected folder's new mail only after a NOOP (dovecot does).
        self.client.noop()
        # "N:*" also matches the highest UID when it is below N (RFC 3501): filter.
        return sorted(u for u in self.client.search(["UID", f"{uid + 1}:*"]) if u > uid)

    def uids_since(self, date_ms: int) -> list[int]:
        """Messages the server received at or after `date_ms` (after a UIDVALIDITY change)."""
        day = datetime.fromtimestamp(date_ms / 1000, UTC).date()
        uids = sorted(self.client.search(["SINCE", day]))
        return [f.uid for f in self._dates(uids) if f.date_ms >= date_ms]

    def _dates(self, uids: list[int]) -> list[Fetched]:
        out: list[Fetched] = []
        for i in range(0, len(uids), 500):
            for uid, data in self.client.fetch(uids[i : i + 500], ["INTERNALDATE"]).items():
                out.append(Fetched(uid, b"", _ms(data.get(b"INTERNALDATE"))))
        return sorted(out, key=lambda f: f.uid)

    def fetch(self, uids: list[int]) -> list[Fetched]:
        """The messages (whole, without setting \\Seen), in UID order; a UID expunged
        meanwhile is simply absent."""
        out: list[Fetched] = []
        for i in range(0, len(uids), FETCH_BATCH):
            response = self.client.fetch(uids[i : i + FETCH_BATCH], ["BODY.PEEK[]", "INTERNALDATE"])
            for uid, data in response.items():
                raw = data.get(b"BODY[]")
                if isinstance(raw, bytes):
                    out.append(Fetched(uid, raw, _ms(data.get(b"INTERNALDATE"))))
        return sorted(out, key=lambda f: f.uid)

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Until the server reports a change (IDLE), `seconds` pass, or `stop` is set."""
        deadline = time.monotonic() + min(seconds, MAX_IDLE_S)
        if not self.idle_supported:
            stop.wait(max(0.0, deadline - time.monotonic()))
            self.client.noop()
            return
        client = self.client
        client.idle()
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if client.idle_check(timeout=IDLE_CHECK_S):
                    return  # EXISTS, EXPUNGE, ...: the caller searches for new UIDs
        finally:
            client.idle_done()

    def close(self) -> None:
        if self._client is not None:
            _close_quietly(self._client)
            self._client = None


def _ms(value: object) -> int:
    if isinstance(value, datetime):
        # IMAPClient gives INTERNALDATE as naive local time unless normalise_times is off.
        aware = value if value.tzinfo else value.astimezone()
        return int(aware.timestamp() * 1000)
    return 0


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - a connection already broken cannot log out; nothing else to do
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001 - same: closing a dead socket
            pass
