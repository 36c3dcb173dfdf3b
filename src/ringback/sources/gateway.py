"""The webhook gateway (`ringback ingest`): phone-system webhooks in, call events out.

Each request: find the practice from the practice's own number in the payload (the
number called, for an inbound call; never the caller), verify the provider's signature
with that practice's secret (403), turn the payload into canonical records (400 and a
dead letter when an authenticated payload cannot be), produce them and answer 2xx only
once the broker acknowledged every one (503 + Retry-After when it does not, so the
provider retries; a retry gives the same event ids, which collapse downstream).

When the number belongs to no practice there is no practice secret to check against:
the answer is 404 (`unknown_number`), after checking the signature with the
provider's account-wide secret when one is configured (Twilio's auth token, ...).

Provider payloads → records: `connectors/sources/{twilio,ringcentral,dialpad,vonage}.py`
(pure functions); conventions: `connectors/sources/canonical.py`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from ringback.clock import Clock
from ringback.config.secrets import PROVIDER_SECRETS, read_secret
from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import AckedProducer, BrokerUnavailable
from ringback.observability.metrics import DEAD_LETTERS, declare_dead_letter_sources, practice_label
from ringback.schemas import codec
from ringback.sources import dialpad, ringcentral, vonage
from ringback.sources import twilio as twilio_source
from ringback.sources.canonical import (
    PayloadError,
    SignatureError,
    compact_jwt,
    producible,
    safe_e164,
    unverified_claims,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

REQUESTS = Counter("ringback_gateway_requests_total", "Webhook requests by endpoint and status", ["endpoint", "status"])
EVENTS = Counter(
    "ringback_call_events_total",
    "Canonical call events produced (practice: ringback/metrics.py)",
    ["provider", "outcome", "practice"],
)
MESSAGE_STATUSES = Counter("ringback_message_status_total", "SMS delivery receipts produced", ["status"])
REJECTED = Counter("ringback_rejected_inputs_total", "Inputs rejected, by reason", ["endpoint", "reason"])
ACK_LATENCY = Histogram(
    "ringback_gateway_ack_seconds",
    "Request received to broker acknowledgement",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Statuses of the short list above that are known; anything else is counted as "other"
# so a hostile MessageStatus cannot grow the metric's label set.
_KNOWN_MESSAGE_STATUSES = {
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "receiving",
    "received",
    "read",
    "canceled",
    "partially_delivered",
}


class Reject(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _tail(number: str | None) -> str:
    """A number as logs and messages may show it: its last four digits."""
    return f"…{number[-4:]}" if number else "(none)"


class Gateway:
    def __init__(
        self, env: Settings, directory: PracticeDirectory, producer: AckedProducer, clock: Clock | None = None
    ) -> None:
        self.env = env
        self.directory = directory
        self.producer = producer
        self.clock = clock or Clock()
        self.call_topic = topics.topic_name(topics.CALL_EVENTS, env)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
        self.status_topic = topics.topic_name(topics.MESSAGE_STATUS, env)

    # ------------------------------------------------------------------ plumbing
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        routes = {
            "/webhooks/twilio/voice/status": ("twilio_voice_status", self.twilio_voice_status),
            "/webhooks/twilio/voice/transcription": ("twilio_voice_transcription", self.twilio_transcription),
            "/webhooks/twilio/sms/inbound": ("twilio_sms_inbound", self.twilio_sms_inbound),
            "/webhooks/twilio/sms/status": ("twilio_sms_status", self.twilio_sms_status),
            "/webhooks/ringcentral": ("ringcentral", self.ringcentral),
            "/webhooks/dialpad": ("dialpad", self.dialpad),
            "/webhooks/vonage/event": ("vonage_event", self.vonage_event),
        }
        for path, (name, handler) in routes.items():
            app.router.add_post(path, self._endpoint(name, handler))
        declare_dead_letter_sources(name for name, _ in routes.values())
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _endpoint(self, name: str, handler: Callable[[web.Request], Awaitable[web.Response]]):
        async def wrapped(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                await request.read()  # the whole body first: 413 past MAX_BODY_BYTES, before anything else
                response = await handler(request)
            except Reject as rej:
                REJECTED.labels(name, rej.reason).inc()
                log.info("%s: %s %s", name, rej.status, rej.reason)
                response = web.json_response({"error": rej.reason, "message": rej.message}, status=rej.status)
            except web.HTTPRequestEntityTooLarge:
                REJECTED.labels(name, "too_large").inc()
                response = web.json_response(
                    {"error": "too_large", "message": f"body over {MAX_BODY_BYTES} bytes"}, status=413
                )
            except BrokerUnavailable as exc:
                log.warning("broker unavailable, answering 503: %s", exc)
                response = web.json_response(
                    {"error": "unavailable", "message": "event not stored; retry"},
                    status=503,
                    headers={"Retry-After": "5"},
                )
            except web.HTTPClientError as exc:  # aiohttp refusing the request itself (a broken body)
                REJECTED.labels(name, "bad_request").inc()
                response = web.json_response({"error": "bad_request", "message": exc.reason}, status=exc.status)
            except Exception:
                log.exception("unexpected error in %s", name)
                response = web.json_response({"error": "internal"}, status=500)
            else:
                ACK_LATENCY.observe(time.perf_counter() - started)
            REQUESTS.labels(name, str(response.status)).inc()
            return response

        return wrapped

    def _now_ms(self) -> int:
        return self.clock.now_ms()

    def _public_url(self, request: web.Request) -> str:
        """The URL the provider signed: the public base URL (or this request's scheme and
        Host) + the path and query exactly as sent (percent-encoding untouched)."""
        base = self.env.ringback_public_url or f"{request.scheme}://{request.host}"
        return base.rstrip("/") + request.raw_path

    async def _body(self, request: web.Request) -> bytes:
        return await request.read()  # 413 (HTTPRequestEntityTooLarge) past client_max_size

    async def _form(self, request: web.Request):
        """The form fields as posted (a multidict: names may repeat, and the signature covers all)."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise Reject(415, "content_type", "expected application/x-www-form-urlencoded")
        await self._body(request)
        try:
            return await request.post()
        except (ValueError, LookupError) as exc:  # undecodable bytes, an unknown charset
            raise Reject(400, "unreadable_body", f"cannot read the form body: {type(exc).__name__}") from None

    @staticmethod
    def _json(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return None

    async def _produce(self, key: bytes, record: dict) -> None:
        await self.producer.send(self.call_topic, key, codec.encode("call_event", record))
        EVENTS.labels(
            record["provider"], record["outcome"] or record["event_type"], practice_label(record["practice_id"])
        ).inc()

    async def _produce_events(self, events: Iterable[dict]) -> int:
        """Produce the events the stream app needs, each acknowledged before the next."""
        produced = 0
        for event in events:
            if producible(event):
                await self._produce(topics.join_key(event["practice_id"], event["caller"]), event)
                produced += 1
        return produced

    async def dead_letter(
        self, source: str, reason: str, raw: bytes, content_type: str | None, practice_id: str | None
    ) -> None:
        record = {
            "source": source,
            "reason": reason,
            "raw": raw,
            "content_type": content_type,
            "received_at": self._now_ms(),
            "practice_id": practice_id,
        }
        await self.producer.send(self.dead_topic, source.encode(), codec.encode("dead_letter", record))
        DEAD_LETTERS.labels(source).inc()

    async def _malformed(self, source: str, exc: Exception, request: web.Request, practice: Practice | None) -> Reject:
        """Dead-letter an authenticated payload we cannot use; the caller raises the 400."""
        await self.dead_letter(
            source, str(exc), await request.read(), request.content_type, practice.id if practice else None
        )
        return Reject(400, "malformed", str(exc))

    async def _produce_parsed(
        self, source: str, request: web.Request, practice: Practice, parse: Callable[[], Iterable[dict]]
    ) -> None:
        """Produce the events `parse()` makes of an authenticated payload; a PayloadError
        is a 400 and a dead letter."""
        try:
            events = parse()
        except PayloadError as exc:
            raise await self._malformed(source, exc, request, practice) from None
        await self._produce_events(events)

    # ------------------------------------------------------------------ practices and secrets
    def _secret(self, provider: str, practice: Practice | None) -> str | None:
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
        if provider == "twilio" and self.env.twilio_auth_token:
            return self.env.twilio_auth_token
        return read_secret(default_name, self.env)

    def _first_practice(self, numbers: Iterable[str | None]) -> tuple[Practice | None, str | None]:
        """The first number a practice owns, with its practice; else (None, first number)."""
        first = None
        for number in numbers:
            if not number:
                continue
            first = first or number
            practice = self.directory.by_number(number)
            if practice is not None:
                return practice, number
        return None, first

    def _authenticate(
        self, provider: str, practice: Practice | None, number: str | None, check: Callable[[str], Any]
    ) -> Any:
        """`check(secret)` with the practice's (or the account-wide) secret: its result, or
        403 when it is false or raises SignatureError. Without any secret to check with:
        404 for a number no practice owns, 403 otherwise."""
        secret = self._secret(provider, practice)
        if not secret:
            if practice is None and number:
                raise self._unknown(number)
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

    @staticmethod
    def _unknown(number: str) -> Reject:
        return Reject(
            404,
            "unknown_number",
            f"the number {_tail(number)} belongs to no configured practice "
            "(add it to a practice's phone_numbers and apply the practices file)",
        )

    async def _require_practice(
        self, source: str, request: web.Request, practice: Practice | None, number: str | None
    ) -> Practice:
        """After authentication: the practice, or 404 (unknown number) / 400 + dead letter
        (an authenticated payload that names no usable practice number)."""
        if practice is not None:
            return practice
        if number:
            raise self._unknown(number)
        raise await self._malformed(source, PayloadError("no practice number in the payload"), request, None)

    # ------------------------------------------------------------------ Twilio
    async def _twilio_signed(
        self, source: str, request: web.Request, practice: Practice | None, number: str | None, form
    ) -> Practice:
        url = self._public_url(request)
        signature = request.headers.get("X-Twilio-Signature")
        if not signature:
            raise Reject(403, "signature", "missing X-Twilio-Signature")
        self._authenticate(
            "twilio", practice, number, lambda token: twilio_source.signature_valid(token, url, form, signature)
        )
        return await self._require_practice(source, request, practice, number)

    @staticmethod
    def _params(form) -> dict[str, str]:
        params: dict[str, str] = {}
        for key, value in form.items():
            if isinstance(value, str):
                params.setdefault(key, value)
        return params

    async def _twilio_call(self, source: str, request: web.Request, build) -> None:
        form = await self._form(request)
        params = self._params(form)
        number = twilio_source.practice_number(params)
        practice = self.directory.by_number(number) if number else None
        practice = await self._twilio_signed(source, request, practice, number, form)
        await self._produce_parsed(source, request, practice, lambda: [build(params, practice.id, self._now_ms())])

    async def twilio_voice_status(self, request: web.Request) -> web.Response:
        await self._twilio_call("twilio_voice_status", request, twilio_source.voice_status_event)
        return web.Response(status=204)

    async def twilio_transcription(self, request: web.Request) -> web.Response:
        await self._twilio_call("twilio_voice_transcription", request, twilio_source.transcription_event)
        return web.Response(status=204)

    async def twilio_sms_inbound(self, request: web.Request) -> web.Response:
        await self._twilio_call("twilio_sms_inbound", request, twilio_source.sms_event)
        # Empty TwiML: no automatic reply (the stream app decides what to send).
        return web.Response(status=200, text=TWIML_EMPTY, content_type="text/xml")

    async def twilio_sms_status(self, request: web.Request) -> web.Response:
        """Delivery receipt of an SMS we sent. The sinks put `?practice=<id>&action=<id>` in
        the status-callback URL; the signature covers the URL, so the query is trusted."""
        source = "twilio_sms_status"
        form = await self._form(request)
        params = self._params(form)
        practice_id = request.query.get("practice")
        if practice_id:
            practice, number = self.directory.by_id(practice_id), None
            if practice is None:
                # Check with the account-wide token when there is one (403 on forgery), then 404.
                token = self._secret("twilio", None)
                signature = request.headers.get("X-Twilio-Signature")
                if token and not twilio_source.signature_valid(token, self._public_url(request), form, signature):
                    raise Reject(403, "signature", "missing or invalid X-Twilio-Signature")
                raise Reject(404, "unknown_practice", "the practice in the callback URL is not configured")
        else:  # a callback URL without the query: the sender number may still be a practice's
            number = safe_e164(params.get("From"))
            practice = self.directory.by_number(number) if number else None
        practice = await self._twilio_signed(source, request, practice, number, form)
        try:
            action_id = request.query.get("action")
            if action_id is not None and len(action_id) > 256:
                raise PayloadError("action is longer than 256 characters")
            record = twilio_source.message_status_record(params, practice.id, action_id, self._now_ms())
        except PayloadError as exc:
            raise await self._malformed(source, exc, request, practice) from None
        await self.producer.send(
            self.status_topic, topics.join_key(practice.id, record["recipient"]), codec.encode("message_status", record)
        )
        status = record["status"] if record["status"] in _KNOWN_MESSAGE_STATUSES else "other"
        MESSAGE_STATUSES.labels(status).inc()
        return web.Response(status=204)

    # ------------------------------------------------------------------ RingCentral
    async def ringcentral(self, request: web.Request) -> web.Response:
        source = "ringcentral"
        if "Validation-Token" in request.headers:  # subscription handshake: echo, produce nothing
            token = ringcentral.validation_token(request.headers.get("Validation-Token"))
            if token is None:
                raise Reject(400, "validation_token", "Validation-Token is not a plain token")
            return web.Response(status=200, headers={"Validation-Token": token})
        received = request.headers.get("Verification-Token")
        if not received:
            raise Reject(403, "signature", "missing Verification-Token")
        raw = await self._body(request)
        notification = self._json(raw)
        practice, number = self._first_practice(ringcentral.practice_numbers(notification))
        self._authenticate("ringcentral", practice, number, lambda token: ringcentral.token_valid(token, received))
        practice = await self._require_practice(source, request, practice, number)
        await self._produce_parsed(
            source,
            request,
            practice,
            lambda: ringcentral.events(notification, practice.id, practice.phone_numbers, self._now_ms()),
        )
        return web.Response(status=200)

    # ------------------------------------------------------------------ Dialpad
    async def dialpad(self, request: web.Request) -> web.Response:
        source = "dialpad"
        raw = await self._body(request)
        token = compact_jwt(raw)
        if token is None:
            raise Reject(403, "signature", "the body is not a signed JWT (give the Dialpad webhook a secret)")
        claims = unverified_claims(token)
        if claims is None:
            raise Reject(403, "signature", "unreadable JWT")
        practice, number = self._first_practice(dialpad.practice_numbers(claims))
        now_ms = self._now_ms()
        verified = self._authenticate(
            "dialpad", practice, number, lambda secret: dialpad.verify(token, secret, now_ms / 1000)
        )
        practice = await self._require_practice(source, request, practice, number)
        await self._produce_parsed(
            source, request, practice, lambda: dialpad.events(verified, practice.id, number, now_ms)
        )
        return web.Response(status=204)

    # ------------------------------------------------------------------ Vonage
    async def vonage_event(self, request: web.Request) -> web.Response:
        source = "vonage_event"
        token = vonage.bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Reject(403, "signature", "missing Authorization: Bearer <signed JWT>")
        raw = await self._body(request)
        payload = self._json(raw)
        number = vonage.practice_number(payload)
        practice = self.directory.by_number(number) if number else None
        now_ms = self._now_ms()
        self._authenticate("vonage", practice, number, lambda secret: vonage.verify(token, secret, raw, now_ms / 1000))
        practice = await self._require_practice(source, request, practice, number)
        await self._produce_parsed(source, request, practice, lambda: vonage.events(payload, practice.id, now_ms))
        return web.Response(status=204)

    # ------------------------------------------------------------------ health
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.directory.ready:
            return web.json_response({"status": "loading practice directory"}, status=503)
        return web.json_response({"status": "ready", "practices": len(self.directory)})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def run(env: Settings, host: str = "0.0.0.0", port: int = 8080) -> None:
    directory = PracticeDirectory().follow(env)
    producer = AckedProducer(env.kafka_bootstrap_servers)
    admin.ensure_topics(env)
    # Serve nothing before every practice is known: a webhook for a practice not read yet
    # would get a 404 and be lost, while a refused connection is retried by the provider.
    while not directory.wait_ready(30):
        log.warning("still reading the practice config topic; not listening yet")
    log.info("gateway listening on %s:%s for %d practices", host, port, len(directory))
    gateway = Gateway(env, directory, producer)
    try:
        web.run_app(gateway.app(), host=host, port=port, access_log=None, print=None)
    finally:
        producer.close()
        directory.close()
