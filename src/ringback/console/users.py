"""Staff accounts of the console: one file, passwords hashed with Argon2id.

An account belongs to exactly one practice (`practice_id`, `username`) and has one
or more roles (`nurse`, `scheduling_coordinator`, ...): a user works the tasks of
their roles and sees the callers of those tasks (see `views.py`).

The file is JSON, written atomically with mode 0600 (env `RINGBACK_CONSOLE_USERS`,
default `<RINGBACK_STATE_DIR>/console/users.json`), managed with
`ringback console add-user|remove-user|list-users`. A running console re-reads it
when it changes, so a removed user or a new password takes effect without a restart.
Each account carries a `session_epoch`, bumped on every password or role change:
sessions issued before are refused from then on.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ringback.config.settings import Settings

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
PRACTICE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")  # as ringback.domain.practice.Practice.id
MIN_PASSWORD = 10
MAX_PASSWORD = 1024

DEFAULT_HASHER = PasswordHasher()  # Argon2id with the library's current (RFC 9106 low-memory) parameters


class UserError(ValueError):
    """A bad account request (the message says which field and why)."""


@dataclass(frozen=True)
class User:
    practice_id: str
    username: str
    roles: tuple[str, ...]
    password_hash: str = field(repr=False)
    session_epoch: int = 1
    created_at: int = 0

    @property
    def key(self) -> str:
        return f"{self.practice_id}/{self.username}"


def users_path(env: Settings) -> Path:
    return env.ringback_console_users or env.ringback_state_dir / "console" / "users.json"


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} characters")


def check_names(practice_id: str, username: str, roles: tuple[str, ...] | list[str]) -> None:
    if not PRACTICE_RE.match(practice_id or ""):
        raise UserError("practice: lower-case letters, digits and dashes (a practice id of the practices file)")
    if not USERNAME_RE.match(username or ""):
        raise UserError("username: 2-63 of a-z 0-9 . _ - (starting with a letter or digit)")
    if not roles:
        raise UserError("roles: at least one role (e.g. nurse, scheduling_coordinator, admin_team)")
    for role in roles:
        if not ROLE_RE.match(role):
            raise UserError(f"roles: {role[:40]!r} is not a role name (a-z, 0-9, _)")


class UserStore:
    """The accounts file; safe to share between threads; re-read when it changes."""

    def __init__(self, path: str | Path, hasher: PasswordHasher = DEFAULT_HASHER) -> None:
        self.path = Path(path)
        self.hasher = hasher
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}

    # ------------------------------------------------------------------ reading
    def _current(self) -> dict[str, User]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._users = self._read() if stamp else {}
                self._stamp = stamp
            return self._users

    def _read(self) -> dict[str, User]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise UserError(f"{self.path}: not a valid users file ({exc})") from None
        users = {}
        for raw in data.get("users", []):
            u = User(
                practice_id=raw["practice_id"],
                username=raw["username"],
                roles=tuple(raw["roles"]),
                password_hash=raw["password_hash"],
                session_epoch=int(raw.get("session_epoch", 1)),
                created_at=int(raw.get("created_at", 0)),
            )
            users[u.key] = u
        return users

    def get(self, practice_id: str, username: str) -> User | None:
        return self._current().get(f"{practice_id}/{username}")

    def list(self, practice_id: str | None = None) -> list[User]:
        return sorted(
            (u for u in self._current().values() if practice_id in (None, u.practice_id)),
            key=lambda u: (u.practice_id, u.username),
        )

    def roles_of_practice(self, practice_id: str) -> set[str]:
        return {r for u in self.list(practice_id) for r in u.roles}

    def verify(self, practice_id: str, username: str, password: str) -> User | None:
        """The account if the password is right; None otherwise (same cost either way)."""
        user = self.get(practice_id, username)
        if not password or len(password) > MAX_PASSWORD:
            return None
        if self._dummy_hash is None:
            # Verified against when the account does not exist: a wrong username costs as much as a wrong password.
            self._dummy_hash = self.hasher.hash("ringback-console-no-such-user")
        try:
            self.hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user

    # ------------------------------------------------------------------ writing (the CLI)
    @contextmanager
    def _editing(self) -> Iterator[dict[str, User]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = dict(self._read())
            yield users
            self._write(users)

    def _write(self, users: dict[str, User]) -> None:
        body = {
            "version": 1,
            "users": [asdict(u) | {"roles": list(u.roles)} for u in sorted(users.values(), key=lambda u: u.key)],
        }
        fd, tmp = tempfile.mkstemp(prefix=".users-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(body, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def add(
        self,
        practice_id: str,
        username: str,
        password: str,
        roles: Sequence[str],  # not `list[str]`: in this class `list` is the method
        now_ms: int,
        replace: bool = False,
    ) -> User:
        roles = tuple(dict.fromkeys(roles))
        check_names(practice_id, username, roles)
        check_password(password)
        with self._editing() as users:
            old = users.get(f"{practice_id}/{username}")
            if old is not None and not replace:
                raise UserError(
                    f"username: {username!r} already exists at {practice_id} "
                    "(use --update to change its password or roles)"
                )
            user = User(
                practice_id,
                username,
                roles,
                self.hasher.hash(password),
                session_epoch=(old.session_epoch + 1) if old else 1,
                created_at=old.created_at if old else now_ms,
            )
            users[user.key] = user
        return user

    def remove(self, practice_id: str, username: str) -> bool:
        with self._editing() as users:
            return users.pop(f"{practice_id}/{username}", None) is not None
