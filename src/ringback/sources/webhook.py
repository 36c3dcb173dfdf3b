"""One webhook request, as a provider adapter's handler sees it.

The gateway (gateway.py) routes each webhook path to a provider's handler (`twilio.handle_voice_status`,
`dialpad.handle_call_event`, ...) and hands it a `Webhook`: the request, and the steps every provider
takes, in this order:

0. the body is read and its Content-Encoding undone before anything else (`Webhook.body`):
   413 / 415 / 400 when it cannot be;
1. find the practice from the practice's own number in the payload (the number called, for an
   inbound call; never the caller);
2. verify the provider's signature with that practice's secret, else the account-wide one (403);
   a number no practice owns is a 404 (`unknown_number`), after checking the signature with the
   account-wide secret when one is configured;
   where the body cannot be decoded (0.) or names no practice to choose a secret by (`Unverifiable`),
   the adapter's `Vouch` may still prove the request authentic with some practice's secret (a
   credential that does not depend on the payload: RingCentral's header token, Vonage's bearer JWT,
   Dialpad's JWS signature): then it is a dead letter, not a 4xx that loses it;
3. turn the payload into records: an authenticated payload that cannot be (a PayloadError, or a
   record the codec refuses: text that is not encodable) is a dead letter, answered 400 (or the
   adapter's `dead_lettered_status`: RingCentral counts every 4xx against the subscription);
4. produce them (the gateway answers 2xx only once the broker acknowledged every one).

A handler refuses a request by raising `Reject`; the gateway answers `{"error": reason, "message": ...}`
with its status and counts the reason.
"""

from __future__ import annotations

import hmac
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from ringback.clock import Clock
from ringback.config.secrets import PROVIDER_SECRETS, read_secret
from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas.codec import SchemaValidationError
from ringback.sources.canonical import PayloadError, SignatureError

log = logging.getLogger(__name__)

T = TypeVar("T")
# A provider's request handler (one per webhook path, in the gateway's registry).
Handler = Callable[["Webhook"], Awaitable[web.Response]]
# For a request whose payload cannot be read or names no practice: whether a credential that does
# not depend on the payload vouches for it, and the practice whose secret did (None: the
# account-wide secret, or nobody).
Vouch = Callable[["Webhook"], tuple[bool, Practice | None]]


class Reject(Exception):
    """A refused request: the status to answer, a short reason (an error code and a metric label),
    a message for the provider's logs (never PHI)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Unverifiable(Reject):
    """Nothing in the payload says whose secret to check the request with (403 unless vouched)."""


class UnreadableBody(Reject):
    """A body whose Content-Encoding cannot be undone: broken, truncated, unsupported, or too large
    once decompressed."""


# The content codings the gateway undoes itself (aiohttp's own decoding is off, see gateway.app):
# zlib's window bits for each.
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decoded_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`raw` with its content codings undone (the last applied first), or UnreadableBody:
    415 for a coding we do not decode, 400 for a stream that is broken, truncated or followed
    by other bytes, 413 past `limit` bytes decompressed (a small body may inflate enormously)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    body = raw
    for coding in reversed([c for c in codings if c and c != "identity"]):
        wbits = _INFLATE_WBITS.get(coding)
        if wbits is None:
            message = f"Content-Encoding {coding[:32]!r} is not supported (gzip, deflate)"
            raise UnreadableBody(415, "content_encoding", message)
        body = _inflate(body, coding, wbits, limit)
    return body


def _inflate(data: bytes, coding: str, wbits: int, limit: int) -> bytes:
    if coding == "deflate" and data[:1] and data[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate without the zlib header, as some clients send it
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UnreadableBody(400, "bad_encoding", f"the {coding} body does not decompress: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise UnreadableBody(413, "too_large", f"body over {limit} bytes once decompressed ({coding})")
    if not inflater.eof:
        raise UnreadableBody(400, "bad_encoding", f"the {coding} body is truncated")
    if inflater.unused_data:
        raise UnreadableBody(400, "bad_encoding", f"bytes after the end of the {coding} stream")
    return out


def _tail(number: str | None) -> str:
    """A number as logs and messages may show it: its last four digits."""
    return f"…{number[-4:]}" if number else "(none)"


class Gateway(Protocol):
    """What a handler uses of the gateway (sources/gateway.py), which imports the provider
    modules: the providers know it by this interface, not by importing it."""

    env: Settings
    clock: Clock
    directory: PracticeDirectory

    async def produce_events(self, events: Iterable[dict]) -> int: ...

    async def produce_message_status(self, record: dict) -> None: ...

    async def dead_letter(
        self, source: str, reason: str, raw: bytes, content_type: str | None, practice_id: str | None
    ) -> None: ...


class Webhook:
    """The request of one webhook endpoint (`source`: its name, the source of its dead letters;
    `vouch`: its provider's payload-free credential check; `dead_lettered_status`: the answer once
    an authentic request is dead-lettered, None for its 4xx)."""

    def __init__(
        self,
        gateway: Gateway,
        source: str,
        request: web.Request,
        vouch: Vouch | None = None,
        dead_lettered_status: int | None = None,
    ) -> None:
        self.gateway = gateway
        self.source = source
        self.request = request
        self.vouch = vouch
        self.dead_lettered_status = dead_lettered_status
        self._body: bytes | None = None

    @property
    def env(self) -> Settings:
        return self.gateway.env

    def now_ms(self) -> int:
        return self.gateway.clock.now_ms()

    # ------------------------------------------------------------------ the request
    def public_url(self) -> str:
        """The URL the provider signed: the public base URL (or this request's scheme and
        Host) + the path and query exactly as sent (percent-encoding untouched)."""
        base = self.env.ringback_public_url or f"{self.request.scheme}://{self.request.host}"
        return base.rstrip("/") + self.request.raw_path

    async def raw_body(self) -> bytes:
        """The body as received (still compressed, when it was)."""
        try:
            return await self.request.read()  # 413 (HTTPRequestEntityTooLarge) past the gateway's body limit
        except web.RequestPayloadError:  # the framing broke (chunked encoding, a body cut short)
            raise Reject(400, "unreadable_body", "the request body ended early or its framing is broken") from None

    async def body(self) -> bytes:
        """The body with its Content-Encoding undone (UnreadableBody when it cannot be)."""
        if self._body is None:
            raw = await self.raw_body()
            self._body = decoded_body(raw, self.request.headers.get("Content-Encoding"), self.request.client_max_size)
        return self._body

    @property
    def decoded(self) -> bytes | None:
        """The decoded body once `body()` succeeded, else None (for a `Vouch`, which is synchronous)."""
        return self._body

    async def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (the handler authenticates first,
        then says what is missing)."""
        try:
            return json.loads(await self.body())
        except (ValueError, RecursionError):
            return None

    async def form(self) -> MultiDictProxy[Any]:
        """The form fields as posted (a multidict: names may repeat, and a signature covers all)."""
        if self.request.content_type != "application/x-www-form-urlencoded":
            raise Reject(415, "content_type", "expected application/x-www-form-urlencoded")
        body = await self.body()
        charset = self.request.charset or "utf-8"
        try:  # parsed as aiohttp's request.post() does, from the decoded body
            pairs = parse_qsl(body.rstrip().decode(charset), keep_blank_values=True, encoding=charset)
        except (ValueError, LookupError) as exc:  # undecodable bytes, an unknown charset
            raise Reject(400, "unreadable_body", f"cannot read the form body: {type(exc).__name__}") from None
        return MultiDictProxy(MultiDict(pairs))

    # ------------------------------------------------------------------ practices and secrets
    def practice_by_id(self, practice_id: str) -> Practice | None:
        return self.gateway.directory.by_id(practice_id)

    def practice_by_number(self, number: str | None) -> Practice | None:
        return self.gateway.directory.by_number(number) if number else None

    def first_practice(self, numbers: Iterable[str | None]) -> tuple[Practice | None, str | None]:
        """The first number a practice owns, with its practice; else (None, first number)."""
        first = None
        for number in numbers:
            if not number:
                continue
            first = first or number
            practice = self.gateway.directory.by_number(number)
            if practice is not None:
                return practice, number
        return None, first

    def secret(self, provider: str, practice: Practice | None) -> str | None:
        """The practice's secret for a provider, else the account-wide one, else None."""
        key, default_name = PROVIDER_SECRETS[provider]
        if practice is not None and key in practice.secrets:
            value = read_secret(practice.secrets[key], self.env)
            if not value:
                log.error(
                    "practice %s names secret %r for %s, but it is not set (env var or %s)",
                    practice.id,
                    practice.secrets[key],
                    provider,
                    self.env.ringback_secrets_dir,
                )
            return value
        if provider == "twilio" and self.env.twilio_auth_token:  # the account's token, also used to send SMS
            return self.env.twilio_auth_token
        return read_secret(default_name, self.env)

    def authenticate(
        self, provider: str, practice: Practice | None, number: str | None, check: Callable[[str], T]
    ) -> T:
        """`check(secret)` with the practice's (or the account-wide) secret: its result, or
        403 when it is false or raises SignatureError. Without any secret to check with:
        404 for a number no practice owns, 403 otherwise."""
        secret = self.secret(provider, practice)
        if not secret:
            if practice is None and number:
                raise unknown_number(number)
            if practice is None:
                raise Unverifiable(403, "unverifiable", "cannot authenticate: the payload names no practice number")
            raise Reject(403, "no_secret", f"no {provider} secret is configured for this practice")
        try:
            verified = check(secret)
        except SignatureError as exc:
            raise Reject(403, "signature", f"invalid signature: {exc}") from None
        if not verified:
            raise Reject(403, "signature", "missing or invalid signature")
        return verified

    def vouched(self, provider: str, check: Callable[[str], object]) -> tuple[bool, Practice | None]:
        """For a request whose body cannot be read (so names no practice): whether `check(secret)`
        passes with some practice's secret for `provider` (that practice) or the account-wide one
        (practice None)."""
        key, default_name = PROVIDER_SECRETS[provider]
        for practice in self.gateway.directory:
            name = practice.secrets.get(key)
            secret = read_secret(name, self.env) if name else None
            if secret and _passes(check, secret):
                return True, practice
        account = self.env.twilio_auth_token if provider == "twilio" else None
        account = account or read_secret(default_name, self.env)
        return (True, None) if account and _passes(check, account) else (False, None)

    async def require_practice(self, practice: Practice | None, number: str | None) -> Practice:
        """After authentication: the practice, or 404 (unknown number) / 400 + dead letter
        (an authenticated payload that names no usable practice number)."""
        if practice is not None:
            return practice
        if number:
            raise unknown_number(number)
        raise await self.malformed(PayloadError("no practice number in the payload"), None)

    # ------------------------------------------------------------------ records
    async def malformed(self, exc: Exception, practice: Practice | None) -> Reject:
        """Dead-letter an authenticated payload we cannot use (the decoded body); the caller raises
        the 400 (or the adapter's `dead_lettered_status`)."""
        await self.gateway.dead_letter(
            self.source, str(exc), await self.body(), self.request.content_type, practice.id if practice else None
        )
        return Reject(self.dead_lettered_status or 400, "malformed", str(exc))

    async def unreadable(self, exc: UnreadableBody) -> Reject:
        """A body that cannot be decoded: dead-lettered as received when the adapter's `Vouch`
        proves the request authentic; the caller raises the answer."""
        vouched, practice = self.vouch(self) if self.vouch is not None else (False, None)
        if not vouched:
            return exc
        encoding = self.request.headers.get("Content-Encoding", "")
        await self.gateway.dead_letter(
            self.source,
            f"{exc.message} (Content-Encoding: {encoding[:64]}; raw holds the bytes as received)",
            await self.raw_body(),
            self.request.content_type,
            practice.id if practice else None,
        )
        return Reject(self.dead_lettered_status or exc.status, exc.reason, exc.message)

    async def unidentified(self, exc: Unverifiable) -> Reject:
        """A payload that names no practice (not JSON, not UTF-8, no number): a malformed payload
        when the adapter's `Vouch` proves the request authentic, else the 403; the caller raises it."""
        vouched, practice = self.vouch(self) if self.vouch is not None else (False, None)
        if not vouched:
            return exc
        return await self.malformed(PayloadError(f"{exc.message} (authentic: its credential is valid)"), practice)

    async def produce(self, practice: Practice, parse: Callable[[], Iterable[dict]]) -> None:
        """Produce the call events `parse()` makes of an authenticated payload (those the stream
        app needs). A PayloadError, or a record the codec cannot write (a lone surrogate escaped in
        the JSON cannot be UTF-8), is a malformed payload: a dead letter, never a 500."""
        try:
            await self.gateway.produce_events(parse())
        except (PayloadError, SchemaValidationError) as exc:
            raise await self.malformed(exc, practice) from None

    async def produce_message_status(self, record: dict) -> None:
        """Produce a delivery receipt of an SMS we sent (schemas/message_status.avsc) for the
        authenticated practice `record["practice_id"]`; a record the codec cannot write is a
        malformed payload."""
        try:
            await self.gateway.produce_message_status(record)
        except SchemaValidationError as exc:
            raise await self.malformed(exc, self.practice_by_id(record["practice_id"])) from None


def header_token(provider: str, header: str) -> Vouch:
    """The `Vouch` of a provider whose credential is a shared token in a header (RingCentral's
    `Verification-Token`): it proves the sender without the body."""

    def vouch(hook: Webhook) -> tuple[bool, Practice | None]:
        received = hook.request.headers.get(header)
        if not received:
            return False, None
        token = _utf8(received)
        return hook.vouched(provider, lambda secret: hmac.compare_digest(_utf8(secret), token))

    return vouch


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # a header's undecodable bytes, as aiohttp kept them


def _passes(check: Callable[[str], object], secret: str) -> bool:
    try:
        return bool(check(secret))
    except SignatureError:
        return False


def unknown_number(number: str) -> Reject:
    return Reject(
        404,
        "unknown_number",
        f"the number {_tail(number)} belongs to no configured practice "
        "(add it to a practice's phone_numbers and apply the practices file)",
    )
