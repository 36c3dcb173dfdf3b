"""One webhook request, as a provider adapter's handler sees it.

The gateway (gateway.py) routes each webhook path to a provider's handler (`twilio.handle_voice_status`,
`dialpad.handle_call_event`, ...) and hands it a `Webhook`: the request, and the steps every provider
takes, in this order:

1. find the practice from the practice's own number in the payload (the number called, for an
   inbound call; never the caller);
2. verify the provider's signature with that practice's secret, else the account-wide one (403);
   a number no practice owns is a 404 (`unknown_number`), after checking the signature with the
   account-wide secret when one is configured;
3. turn the payload into records: an authenticated payload that cannot be is a 400 and a dead letter;
4. produce them (the gateway answers 2xx only once the broker acknowledged every one).

A handler refuses a request by raising `Reject`; the gateway answers `{"error": reason, "message": ...}`
with its status and counts the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from aiohttp import web
from multidict import MultiDictProxy

from ringback.clock import Clock
from ringback.config.secrets import PROVIDER_SECRETS, read_secret
from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sources.canonical import PayloadError, SignatureError

log = logging.getLogger(__name__)

T = TypeVar("T")
# A provider's request handler (one per webhook path, in the gateway's registry).
Handler = Callable[["Webhook"], Awaitable[web.Response]]


class Reject(Exception):
    """A refused request: the status to answer, a short reason (an error code and a metric label),
    a message for the provider's logs (never PHI)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


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
    """The request of one webhook endpoint (`source`: its name, the source of its dead letters)."""

    def __init__(self, gateway: Gateway, source: str, request: web.Request) -> None:
        self.gateway = gateway
        self.source = source
        self.request = request

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

    async def body(self) -> bytes:
        return await self.request.read()  # 413 (HTTPRequestEntityTooLarge) past the gateway's body limit

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
        await self.body()
        try:
            return await self.request.post()
        except (ValueError, LookupError) as exc:  # undecodable bytes, an unknown charset
            raise Reject(400, "unreadable_body", f"cannot read the form body: {type(exc).__name__}") from None

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
                raise Reject(403, "unverifiable", "cannot authenticate: the payload names no practice number")
            raise Reject(403, "no_secret", f"no {provider} secret is configured for this practice")
        try:
            verified = check(secret)
        except SignatureError as exc:
            raise Reject(403, "signature", f"invalid signature: {exc}") from None
        if not verified:
            raise Reject(403, "signature", "missing or invalid signature")
        return verified

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
        """Dead-letter an authenticated payload we cannot use; the caller raises the 400."""
        await self.gateway.dead_letter(
            self.source, str(exc), await self.body(), self.request.content_type, practice.id if practice else None
        )
        return Reject(400, "malformed", str(exc))

    async def produce(self, practice: Practice, parse: Callable[[], Iterable[dict]]) -> None:
        """Produce the call events `parse()` makes of an authenticated payload (those the
        stream app needs); a PayloadError is a 400 and a dead letter."""
        try:
            events = parse()
        except PayloadError as exc:
            raise await self.malformed(exc, practice) from None
        await self.gateway.produce_events(events)

    async def produce_message_status(self, record: dict) -> None:
        """Produce a delivery receipt of an SMS we sent (schemas/message_status.avsc)."""
        await self.gateway.produce_message_status(record)


def unknown_number(number: str) -> Reject:
    return Reject(
        404,
        "unknown_number",
        f"the number {_tail(number)} belongs to no configured practice "
        "(add it to a practice's phone_numbers and apply the practices file)",
    )
