"""Google Voice notification e-mails → what they say (pure: bytes in, a value out).

Google Voice has no call-log API; with e-mail notifications on (voice.google.com →
Settings → Messages / Voicemail / Calls, "Get … via email"), it mails every missed call,
voicemail (with its transcript) and text to the user's mailbox. `read_notification` reads
one such message into a `Notification`, or an `Unreadable` reason (the watcher dead-letters
the raw message). `call_events` turns a notification into the canonical call events of a
practice. The layouts this reads, and where they come from: docs/providers/google-voice.md
and tests/vendor/google_voice/README.md.

What a message is comes from its Subject ("New missed call from …", "New voicemail from …",
"New text message from …"); the caller's number from the Subject, else (a contact's name in
the Subject) from the body, else (texts) from the `txt.voice.google.com` reply address,
which carries the Google Voice number and the sender's. The time is the Date header.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

import phonenumbers

from ringback.domain.phones import PhoneRejected, normalize
from ringback.sources.canonical import call_event

PROVIDER = "google_voice"
TEXT_MAX = 4096  # a transcript or text kept in an event; longer ones are cut

# Subject → kind. Google localises these; English is what the samples and docs show.
_SUBJECTS = (
    (re.compile(r"^\s*new\s+missed\s+call\s+from\s+(?P<who>.+?)\s*$", re.I), "missed_call"),
    (re.compile(r"^\s*new\s+voicemail\s+from\s+(?P<who>.+?)(?:\s+at\s+\d{1,2}:\d{2}.*)?\s*$", re.I), "voicemail"),
    (re.compile(r"^\s*new\s+(?:text\s+)?message\s+from\s+(?P<who>.+?)\s*$", re.I), "text"),
    (re.compile(r"^\s*new\s+group\s+message\s+from\s+(?P<who>.+?)\s*$", re.I), "text"),
)
# Where Google's boilerplate starts: nothing from here on is the caller's words.
_FOOTER = re.compile(
    r"^\s*(your account\b|help center\b|help forum\b|to respond to this text message|"
    r"this email was sent to you because|google llc\b|play message\b|call back\b|listen\b)",
    re.I,
)
# Lines of the layout around the transcript / text (the kind's label, the time, the logo).
_LABEL = re.compile(r"^\s*(google voice|missed call|voicemail|text message|\d{1,2}:\d{2}\s*([ap]\.?m\.?)?)\s*$", re.I)
_URL = re.compile(r"<?https?://\S+>?")
_NO_TRANSCRIPT = re.compile(r"^\s*\(?\s*(transcript(ion)? (is )?not available|unable to transcribe)", re.I)
_SMS_ADDRESS = re.compile(r"^(?P<ours>\d{10,15})\.(?P<theirs>\d{10,15})\.[^@]+@txt\.voice\.google\.com$", re.I)


@dataclass(frozen=True)
class Notification:
    """One Google Voice notification: `kind` missed_call | voicemail | text."""

    kind: str
    message_id: str  # stable id of the message (Message-ID, else a hash of its bytes)
    caller: str  # E.164
    occurred_at_ms: int
    text: str | None  # the voicemail transcript or the text message; None for a missed call
    numbers: tuple[str, ...]  # every other number the message names (E.164): the Google Voice number, if given


@dataclass(frozen=True)
class Unreadable:
    """A message that is not a notification we can read; `reason` names no PHI."""

    reason: str


def read_notification(raw: bytes, region: str = "US") -> Notification | Unreadable:
    """One RFC 5322 message → Notification, or Unreadable with a reason."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # noqa: BLE001 - the parser's errors are not a closed set; any means unreadable
        return Unreadable(f"not an e-mail message ({type(exc).__name__})")
    assert isinstance(msg, EmailMessage)  # policy.default builds EmailMessage
    try:
        subject = str(msg.get("Subject") or "")
        sender = str(msg.get("From") or "")
        date = msg.get("Date")
    except Exception as exc:  # noqa: BLE001 - malformed headers raise from the header registry
        return Unreadable(f"malformed header ({type(exc).__name__})")
    kind, who = _kind(subject)
    if kind is None:
        return Unreadable("subject is not a Google Voice missed-call, voicemail or text notification")
    if not _from_google_voice(sender):
        return Unreadable(
            "not sent by Google Voice (From is neither voice-noreply@google.com nor txt.voice.google.com)"
        )
    occurred = _date_ms(date)
    if occurred is None:
        return Unreadable("Date header missing or not an RFC 5322 date")
    body = _head(_body_text(msg))
    ours, theirs = _sms_address_numbers(sender)
    caller = _number(who, region) or theirs or _first_number(body, region, exclude={ours} if ours else set())
    if caller is None:
        return Unreadable("no caller number in the subject, the body or the sender address")
    numbers = {n for n in _all_numbers(subject + "\n" + body, region) if n != caller}
    if ours:
        numbers.add(ours)
    text = _words(body, who) if kind != "missed_call" else None
    if kind == "text" and text is None:
        text = ""  # a picture message: the text is empty, the message still is one
    return Notification(
        kind=kind,
        message_id=_message_id(msg, raw),
        caller=caller,
        occurred_at_ms=occurred,
        text=text,
        numbers=tuple(sorted(numbers)),
    )


def call_events(note: Notification, practice_id: str, called: str, received_ms: int) -> list[dict]:
    """The call events a notification becomes for a practice (`called`: its number the call
    was for). A voicemail gives its TRANSCRIPTION first, then the VOICEMAIL call: the worker
    keeps a transcript by call id for the case the call opens (workflow/inputs.py), so the
    case is classified with it at once. Ids derive from the message, so a message read twice
    gives the same events (the worker drops the repeat)."""
    call_id = "gv-" + hashlib.sha256(note.message_id.encode()).hexdigest()[:24]

    def event(suffix: str, event_type: str, outcome: str | None, status: str, **text: str | None) -> dict:
        return call_event(
            event_id=f"{PROVIDER}:{call_id}:{suffix}",
            provider=PROVIDER,
            event_type=event_type,
            outcome=outcome,
            provider_status=status,
            practice_id=practice_id,
            caller=note.caller,
            called=called,
            direction="INBOUND",
            provider_call_id=call_id,
            occurred_at=note.occurred_at_ms,
            received_at=received_ms,
            transcript=text.get("transcript"),
            sms_body=text.get("sms_body"),
            sms_id=text.get("sms_id"),
        )

    if note.kind == "missed_call":
        return [event("missed", "CALL", "MISSED", "missed call")]
    if note.kind == "voicemail":
        transcript = [
            event("transcription", "TRANSCRIPTION", "VOICEMAIL", "voicemail transcript", transcript=note.text)
        ]
        return [*(transcript if note.text else []), event("voicemail", "CALL", "VOICEMAIL", "voicemail")]
    return [event("sms", "SMS", None, "text message", sms_body=note.text or "", sms_id=call_id)]


# ------------------------------------------------------------------------------ the parts
def _kind(subject: str) -> tuple[str | None, str]:
    for pattern, kind in _SUBJECTS:
        m = pattern.match(subject.replace("\n", " "))
        if m:
            return kind, m.group("who")
    return None, ""


def _from_google_voice(sender: str) -> bool:
    for _name, address in getaddresses([sender]):
        address = address.lower()
        if address == "voice-noreply@google.com" or address.endswith("@txt.voice.google.com"):
            return True
    return False


def _sms_address_numbers(sender: str) -> tuple[str | None, str | None]:
    """(Google Voice number, sender's number) from a `<ours>.<theirs>.<id>@txt.voice.google.com` address."""
    for _name, address in getaddresses([sender]):
        m = _SMS_ADDRESS.match(address)
        if m:
            return _number("+" + m.group("ours"), "US"), _number("+" + m.group("theirs"), "US")
    return None, None


def _date_ms(value: object) -> int | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # RFC 5322 "-0000": time in UTC, zone unknown
        return None
    ms = parsed.timestamp() * 1000
    return int(ms) if 0 <= ms < 10_413_792_000_000 else None


def _message_id(msg: EmailMessage, raw: bytes) -> str:
    mid = str(msg.get("Message-ID") or "").strip()
    if mid and len(mid) <= 512:
        return mid
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _number(text: str, region: str) -> str | None:
    """E.164 when `text` is just a phone number (with its usual punctuation), else None."""
    text = text.strip()
    if not text or len(text) > 40 or not re.fullmatch(r"[+\d\s().\-]+", text):
        return None
    try:
        return normalize(text, region)
    except PhoneRejected:
        return None


def _all_numbers(text: str, region: str) -> list[str]:
    found = []
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
        found.append(phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164))
    return found


def _first_number(text: str, region: str, exclude: set[str]) -> str | None:
    for number in _all_numbers(text, region):
        if number not in exclude:
            return number
    return None


class _Text(HTMLParser):
    """The text of an HTML body, one line per block element (enough for Google's tables)."""

    _BLOCKS = {"br", "p", "div", "tr", "td", "li", "table", "h1", "h2", "h3"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("style", "script", "head"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _body_text(msg: EmailMessage) -> str:
    """The plain-text part, else the HTML part as text; "" when there is neither."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
        content = part.get_content() if part is not None else ""
    except (LookupError, ValueError, UnicodeError, AttributeError):
        return ""
    if not isinstance(content, str):
        return ""
    if part is not None and part.get_content_subtype() == "html":
        parser = _Text()
        parser.feed(content)
        content = "".join(parser.parts)
    return content


def _head(body: str) -> str:
    """The body up to Google's footer, without links (their ids look like numbers)."""
    lines = []
    for line in body.splitlines():
        if _FOOTER.match(line):
            break
        lines.append(_URL.sub(" ", line))
    return "\n".join(lines)


def _words(body: str, who: str) -> str | None:
    """The caller's words in a voicemail or text body: the lines before Google's footer,
    without the layout's labels and the caller's own name or number; None when there are none."""
    kept: list[str] = []
    who_line = who.strip().lower()
    for line in body.splitlines():
        if _FOOTER.match(line):
            break
        stripped = line.strip()
        if not stripped or _LABEL.match(stripped) or stripped.lower() == who_line or _number(stripped, "US"):
            continue
        if _NO_TRANSCRIPT.match(stripped):
            return None
        kept.append(stripped)
    text = " ".join(kept)
    return text[:TEXT_MAX] or None
