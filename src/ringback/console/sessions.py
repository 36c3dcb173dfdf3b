"""Console sessions: a signed, expiring cookie; a CSRF token bound to it; login throttling.

The cookie (`rb_console`, HttpOnly, SameSite=Strict, Secure behind TLS) holds
`{practice, username, session_epoch, csrf token}` signed with itsdangerous (HMAC,
with the issue time, refused after `max_age`). Nothing in it is secret or PHI; its
signature is what makes it a proof of login. Roles are never taken from it: every
request looks the account up again (a removed account, a new password or new
roles end the sessions issued before, through `session_epoch`).

The signing key is the secret `RINGBACK_CONSOLE_SECRET` (env var or file in the
secrets dir), so several console processes accept each other's sessions; without
it, a random key is created once in `<state dir>/console/session.key` (0600).
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

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


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    issued_at: float


class SessionCodec:
    def __init__(self, key: bytes, max_age_s: int = 12 * 3600) -> None:
        self.max_age_s = max_age_s
        self._serializer = URLSafeTimedSerializer(key, salt=SALT)

    def issue(self, user: User) -> tuple[str, str]:
        """(cookie value, CSRF token) for a user who just signed in."""
        csrf = secrets.token_urlsafe(24)
        value = self._serializer.dumps({"p": user.practice_id, "u": user.username, "e": user.session_epoch, "c": csrf})
        return value, csrf

    def read(self, value: str | None, users: UserStore) -> Session | None:
        """The session of a cookie value: None if unsigned, expired, or its account changed."""
        if not value or len(value) > 4096:
            return None
        try:
            data, issued = self._serializer.loads(value, max_age=self.max_age_s, return_timestamp=True)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        try:
            user = users.get(str(data["p"]), str(data["u"]))
            epoch, csrf = int(data["e"]), str(data["c"])
        except (KeyError, TypeError, ValueError):
            return None
        if user is None or user.session_epoch != epoch:
            return None
        return Session(user, csrf, issued.timestamp())


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and sent != "" and hmac.compare_digest(session.csrf.encode(), sent.encode())


class LoginThrottle:
    """At most `limit` failed logins per key (account, client address) in `window_s`."""

    def __init__(self, limit: int = 10, window_s: float = 900.0, clock=time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: dict[str, deque] = {}

    def _recent(self, key: str) -> deque:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def retry_after(self, *keys: str) -> int:
        """Seconds until another try is allowed (0: allowed now)."""
        wait = 0.0
        for key in keys:
            q = self._recent(key)
            if len(q) >= self.limit:
                wait = max(wait, q[0] + self.window_s - self.clock())
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            self._recent(key).append(now)
        if len(self._failures) > 10_000:  # forget idle keys so a spray of names cannot grow memory
            for k in [k for k, q in self._failures.items() if not q or q[-1] < now - self.window_s]:
                del self._failures[k]

    def succeeded(self, account_key: str) -> None:
        self._failures.pop(account_key, None)
