"""Sends SMS through Twilio Programmable Messaging with the official `twilio` library
(its asyncio HTTP client), and finds out whether a message went out after all.

`TWILIO_API_BASE_URL` points the library at another host (a proxy, or the Prism
mock of Twilio's OpenAPI contract in tests). Twilio's spec marks only `To` as
required; "From or MessagingServiceSid" and a Body are prose rules we enforce here.

Failures come out as `retry.Transient` (429, 5xx, timeouts, connection errors;
`ambiguous=True` when the request may have been carried out), `retry.Permanent`
(other 4xx) or `retry.OptedOut` (error 21610: the recipient unsubscribed).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.sinks.retry import OptedOut, Permanent, RateLimited, Transient, parse_retry_after

UNSUBSCRIBED = 21610  # "Attempt to send to unsubscribed recipient"
LOOKUP_SKEW_S = 600  # a message created this long before our attempt started is not ours


class SmsRejected(Permanent):
    """The message cannot be sent as asked (no sender, no body): not worth a retry."""


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def status_callback_url(env: Settings, practice_id: str, action_id: str) -> str | None:
    """Where Twilio posts delivery receipts (the gateway), or None without a public URL."""
    if not env.ringback_public_url:
        return None
    query = urlencode({"practice": practice_id, "action": action_id})
    return f"{env.ringback_public_url.rstrip('/')}/webhooks/twilio/sms/status?{query}"


class RetryAfterHttpClient(AsyncTwilioHttpClient):
    """The library's async client, but a 429 comes out as `RateLimited` with the answer's
    Retry-After (the library's exception carries no headers)."""

    async def request(self, *args, **kwargs) -> Response:
        response = await super().request(*args, **kwargs)
        if response.status_code == 429:
            after = parse_retry_after((response.headers or {}).get("Retry-After"), default=1.0)
            raise RateLimited("Twilio answered 429 (rate limited)", retry_after=after)
        return response


class TwilioSms:
    def __init__(self, env: Settings, timeout_s: float | None = None) -> None:
        if not env.twilio_account_sid or not env.twilio_auth_token:
            raise RuntimeError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set for the SMS sink")
        self.env = env
        # The library's async client passes no timeout to aiohttp (5 min default): we
        # bound every call ourselves, and a timeout is an ambiguous outcome.
        self.timeout_s = timeout_s or env.ringback_twilio_timeout_s
        self._client: Client | None = None

    def _get_client(self) -> Client:
        # The async HTTP client opens an aiohttp session: create it inside the running loop.
        if self._client is None:
            client = Client(self.env.twilio_account_sid, self.env.twilio_auth_token, http_client=RetryAfterHttpClient())
            if self.env.twilio_api_base_url:
                client.api.base_url = self.env.twilio_api_base_url.rstrip("/")
            self._client = client
        return self._client

    @staticmethod
    def message_args(practice: Practice, to: str, body: str | None, status_callback: str | None = None) -> dict:
        if not body or not body.strip():
            raise SmsRejected("an SMS needs a body")
        kwargs: dict = {"to": to, "body": body}
        if practice.messaging_service_sid:
            kwargs["messaging_service_sid"] = practice.messaging_service_sid
        elif practice.sms_from:
            kwargs["from_"] = practice.sms_from
        else:
            raise SmsRejected(f"practice {practice.id} has neither sms_from nor messaging_service_sid")
        if status_callback:
            kwargs["status_callback"] = status_callback
        return kwargs

    async def send(self, practice: Practice, to: str, body: str | None, status_callback: str | None = None) -> str:
        """Create the message; returns Twilio's message SID."""
        kwargs = self.message_args(practice, to, body, status_callback)
        try:
            message = await asyncio.wait_for(self._get_client().messages.create_async(**kwargs), self.timeout_s)
        except TwilioRestException as exc:
            raise classify_rest_error(exc) from None
        except TimeoutError:
            raise Transient(f"no answer from Twilio within {self.timeout_s:g}s", ambiguous=True) from None
        except aiohttp.ClientConnectorError as exc:
            # Could not connect: the request never left.
            raise Transient(f"cannot connect to Twilio: {type(exc).__name__}") from None
        except (aiohttp.ClientError, TwilioException, OSError, ValueError) as exc:
            raise Transient(f"Twilio call broke off: {type(exc).__name__}", ambiguous=True) from None
        return message.sid

    async def find_sent(self, practice: Practice, to: str, body: str, since_ms: int) -> str | None:
        """The SID of a message we already created for this send (same recipient, sender and
        body, created since our first attempt), looked up through Twilio's Messages list.
        Raises `Transient` when the look-up itself fails: then nobody knows, so try later."""
        client = self._get_client()
        filters: dict = {"to": to}
        if not practice.messaging_service_sid and practice.sms_from:
            filters["from_"] = practice.sms_from
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        # DateSent filters by day (UTC); the day before covers clock skew around midnight.
        day = (since - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            # One page each (newest first): ours is minutes old. The page is read as loaded,
            # never by following next_page_uri.
            page = await asyncio.wait_for(
                client.messages.page_async(date_sent_after=day, page_size=50, **filters), self.timeout_s
            )
            sid = self._match(list(page), practice, body, since)
            if sid is None:
                # A message still queued has no DateSent yet: look at the newest ones too.
                page = await asyncio.wait_for(client.messages.page_async(page_size=20, **filters), self.timeout_s)
                sid = self._match(list(page), practice, body, since)
        except TwilioRestException as exc:
            raise Transient(f"message look-up failed: HTTP {exc.status}") from None
        except (TimeoutError, aiohttp.ClientError, TwilioException, OSError, ValueError) as exc:
            raise Transient(f"message look-up failed: {type(exc).__name__}") from None
        return sid

    @staticmethod
    def _match(messages, practice: Practice, body: str, since: datetime) -> str | None:
        want = " ".join(body.split())
        for m in messages:
            if " ".join((m.body or "").split()) != want:
                continue
            if m.direction and not str(m.direction).startswith("outbound"):
                continue
            if practice.messaging_service_sid:
                if m.messaging_service_sid and m.messaging_service_sid != practice.messaging_service_sid:
                    continue
            elif practice.sms_from and m.from_ and m.from_ != practice.sms_from:
                continue
            created = m.date_created
            if (
                isinstance(created, datetime)
                and created.tzinfo is not None
                and created < since - timedelta(seconds=LOOKUP_SKEW_S)
            ):
                continue
            return m.sid
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.http_client.close()


def classify_rest_error(exc: TwilioRestException) -> Exception:
    if exc.code == UNSUBSCRIBED:
        return OptedOut("the recipient unsubscribed (Twilio 21610)")
    if exc.status == 429:
        return Transient("Twilio answered 429 (rate limited)")  # refused: nothing was created
    if exc.status >= 500:
        return Transient(f"Twilio answered {exc.status}", ambiguous=True)
    return Permanent(f"Twilio refused the message: HTTP {exc.status}, error {exc.code}")
