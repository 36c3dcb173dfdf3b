"""Console sessions: a signed, expiring, revocable cookie; a CSRF token bound to it; login throttling.

The cookie (`rb_console`, HttpOnly, SameSite=Strict, Secure behind TLS) holds
`{practice, username, session_epoch, session id, csrf token}` signed with itsdangerous
(HMAC, with the issue time read from the injected clock, refused after `max_age`).
Nothing in it is secret or PHI; its signature is what makes it a proof of login. Roles
are never taken from it: every request looks the account up again (a removed account, a
new password or new roles end the sessions issued before, through `session_epoch`).
Signing out revokes the session id for every console replica (`revocations.py`: the
`<ns>.console-sessions` topic); a cookie is accepted only once that list has been read.

The signing key is the secret `RINGBACK_CONSOLE_SECRET` (env var or file in the
secrets dir), so several console processes accept each other's sessions; without
it, a random key is created once in `<state dir>/console/session.key` (0600).

Failed sign-ins slow further tries down (`LoginThrottle`): per account and client
address, and per client address over all accounts, growing delays, never a lockout.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from ringback.clock import Clock
from ringback.config.secrets import read_secret
from ringback.config.settings import Settings
from ringback.console.users import User, UserStore

COOKIE = "rb_console"
CSRF_HEADER = "X-CSRF-Token"
SALT = "ringback.console.session.v1"


def session_key(env: Settings) -> tuple[bytes, str]:
    """(signing key, where it came from)."""
    value = read_secret("RINGBACK_CONSOLE_SECRET", env)
    if value:
        return value.encode(), "secret RINGBACK_CONSOLE_SECRET"
    path = env.ringback_state_dir / "console" / "session.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Path(path).read_text().strip().encode(), f"key file {path}"
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return Path(path).read_text().strip().encode(), f"key file {path} (new)"


class Revocations(Protocol):
    """What the codec asks of the revocation list (`revocations.SessionRevocations`)."""

    def ready(self) -> bool: ...

    def revoked(self, session_id: str) -> bool: ...

    async def revoke(self, session: Session) -> None: ...


class NoRevocations:
    """A single process with no broker (unit tests): nothing revoked but what it revoked itself."""

    def __init__(self) -> None:
        self._revoked: set[str] = set()

    def ready(self) -> bool:
        return True

    def revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    async def revoke(self, session: Session) -> None:
        self._revoked.add(session.session_id)


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    issued_at: float
    session_id: str = ""
    expires_at: float = 0.0


class SessionCodec:
    def __init__(
        self,
        key: bytes,
        max_age_s: int = 12 * 3600,
        clock: Clock | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.max_age_s = max_age_s
        self.clock = clock or Clock()
        self.revocations: Revocations = NoRevocations() if revocations is None else revocations
        now = self.clock.now

        class ClockSigner(TimestampSigner):
            """Signs and checks the issue time with the injected clock, not the wall clock."""

            def get_timestamp(self) -> int:
                return int(now())

        self._serializer = URLSafeTimedSerializer(key, salt=SALT, signer=ClockSigner)

    def issue(self, user: User) -> tuple[str, Session]:
        """(cookie value, session) for a user who just signed in."""
        csrf, session_id = secrets.token_urlsafe(24), secrets.token_urlsafe(18)
        issued = int(self.clock.now())
        value = self._serializer.dumps(
            {"p": user.practice_id, "u": user.username, "e": user.session_epoch, "s": session_id, "c": csrf}
        )
        return value, Session(user, csrf, issued, session_id, issued + self.max_age_s)

    def read(self, value: str | None, users: UserStore) -> Session | None:
        """The session of a cookie value: None if unsigned, expired, revoked, or its account changed
        (and, fail closed, while the revocation list is not read yet)."""
        if not value or len(value) > 4096 or not self.revocations.ready():
            return None
        try:
            data, issued = self._serializer.loads(value, max_age=self.max_age_s, return_timestamp=True)
        except (BadSignature, UnicodeError):  # BadSignature includes SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        try:
            user = users.get(str(data["p"]), str(data["u"]))
            epoch, session_id, csrf = int(data["e"]), str(data["s"]), str(data["c"])
        except (KeyError, TypeError, ValueError):
            return None
        if user is None or user.session_epoch != epoch or self.revocations.revoked(session_id):
            return None
        at = issued.timestamp()
        return Session(user, csrf, at, session_id, at + self.max_age_s)


def csrf_ok(session: Session, sent: str | None) -> bool:
    """The header holds the session's token. Header bytes that are not UTF-8 reach us as lone
    surrogates (aiohttp decodes with surrogateescape): compared as the bytes that were sent."""
    if not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode("utf-8", "surrogateescape"))


class LoginThrottle:
    """Growing delays after failed sign-ins, per key (an account at a client address, or an address).

    The first `delay_from - 1` failures within `window_s` cost nothing; the failure numbered
    `delay_from` makes the next try wait `first_delay_s`, each further one twice as long, up
    to `max_delay_s`. A wait, never a lockout: once it has passed the right password works,
    however many wrong ones came before. Failures older than `window_s` are forgotten, and
    a success forgets those of its key. Time comes from `clock` (seconds).
    """

    def __init__(
        self,
        delay_from: int = 3,
        window_s: float = 900.0,
        first_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.delay_from, self.window_s = delay_from, window_s
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.clock = clock or Clock().now
        self._failures: dict[str, deque[float]] = {}

    def delay_after(self, failures: int) -> float:
        """How long to wait after the last of `failures` failures."""
        if failures < self.delay_from:
            return 0.0
        return min(self.first_delay_s * 2.0 ** min(failures - self.delay_from, 64), self.max_delay_s)

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def retry_after(self, *keys: str) -> float:
        """Seconds until another try is allowed (0: allowed now)."""
        now, wait = self.clock(), 0.0
        for key in keys:
            q = self._recent(key)
            if q:
                wait = max(wait, q[-1] + self.delay_after(len(q)) - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            self._recent(key).append(now)
        if len(self._failures) > 10_000:  # forget idle keys so a spray of names cannot grow memory
            for k in [k for k, q in self._failures.items() if not q or q[-1] < now - self.window_s]:
                del self._failures[k]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
