"""Google Voice notification e-mails for the tests: the samples of tests/vendor/google_voice/
with the caller, the Message-ID and the Date of the test's choosing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.utils import format_datetime

from tests.conftest import REPO

VENDOR = REPO / "tests" / "vendor" / "google_voice"
# The caller each sample names, as Google writes it.
SAMPLE_CALLERS = {
    "missed-call.eml": "(415) 555-0142",
    "voicemail.eml": "(415) 555-0177",
    "text-message.eml": "(415) 555-0199",
    "missed-call-contact.eml": "(415) 555-0163",
    "not-a-notification.eml": None,
}


def sample(name: str) -> bytes:
    return (VENDOR / name).read_bytes()


def _national(e164: str) -> str:
    digits = e164.removeprefix("+1")
    return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"


def notification(name: str, caller: str | None = None, when: datetime | None = None) -> tuple[bytes, str]:
    """(the sample `name` as a new message, its Message-ID); `caller` in E.164 (+1 numbers)."""
    raw = sample(name)
    old = SAMPLE_CALLERS[name]
    if caller and old:
        raw = raw.replace(old.encode(), _national(caller).encode())
        if name == "text-message.eml":
            raw = raw.replace(b".14155550199.", f".{caller.removeprefix('+')}.".encode())
    message_id = f"<{uuid.uuid4().hex}@google.com>"
    lines = []
    for line in raw.split(b"\n"):
        if line.startswith(b"Message-ID:"):
            line = f"Message-ID: {message_id}".encode()
        elif line.startswith(b"Date:") and when is not None:
            line = f"Date: {format_datetime(when)}".encode()
        lines.append(line)
    return b"\r\n".join(lines), message_id


def now() -> datetime:
    return datetime.now(UTC)
