"""The webhook gateway (`ringback ingest`): phone-system webhooks in, call events out.

The gateway is the HTTP plumbing around the provider adapters: `WEBHOOKS`, the registry,
routes each webhook path to its provider's handler (`sources/{twilio,ringcentral,dialpad,vonage}.py`:
authentication, parsing, what to produce; the steps they share: `sources/webhook.py`;
record conventions: `sources/canonical.py`). Adding a provider touches its module and the
registry. Around every handler the gateway keeps the body limit (413), undoes the body's
Content-Encoding itself (400 / 415 when it cannot, and a dead letter of the bytes as received
when the request is authentic without them), maps refusals to status codes and error bodies,
writes dead letters, counts requests in the metrics, and produces each record before it
answers: 2xx only once the broker acknowledged every one (503 + Retry-After when it does not,
so the provider retries; a retry gives the same event ids, which collapse downstream).
Nothing a client sends reaches the 500 of an unexpected error: that is left for bugs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from ringback.clock import Clock
from ringback.config.proxies import parse_trusted, proxy_middlewares
from ringback.config.settings import Settings
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import AckedProducer, BrokerUnavailable
from ringback.observability.metrics import DEAD_LETTERS, declare_dead_letter_sources, practice_label
from ringback.schemas import codec
from ringback.sources import dialpad, ringcentral, twilio, vonage
from ringback.sources.canonical import producible
from ringback.sources.webhook import Handler, Reject, UnreadableBody, Unverifiable, Vouch, Webhook, header_token

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

REQUESTS = Counter("ringback_gateway_requests_total", "Webhook requests by endpoint and status", ["endpoint", "status"])
EVENTS = Counter(
    "ringback_call_events_total",
    "Canonical call events produced (practice: observability/metrics.py)",
    ["provider", "outcome", "practice"],
)
MESSAGE_STATUSES = Counter("ringback_message_status_total", "SMS delivery receipts produced", ["status"])
REJECTED = Counter("ringback_rejected_inputs_total", "Inputs rejected, by reason", ["endpoint", "reason"])
ACK_LATENCY = Histogram(
    "ringback_gateway_ack_seconds",
    "Request received to broker acknowledgement",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# The message statuses Twilio documents label MESSAGE_STATUSES; anything else is counted as
# "other", so a hostile MessageStatus cannot grow the metric's label set.
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


class Adapter(NamedTuple):
    endpoint: str  # labels the endpoint's metrics; the `source` of its dead letters
    handle: Handler
    # Whether a request whose payload cannot be decoded or names no practice is still authentic
    # (a credential that does not depend on the payload), so that it is dead-lettered, not lost.
    vouch: Vouch | None = None
    # The answer once an authentic request is dead-lettered; None: its 4xx (400 malformed, ...).
    dead_lettered_status: int | None = None


# The registry of provider adapters: webhook path → adapter.
WEBHOOKS: dict[str, Adapter] = {
    "/webhooks/twilio/voice/incoming": Adapter("twilio_voice_incoming", twilio.handle_incoming),
    "/webhooks/twilio/voice/status": Adapter("twilio_voice_status", twilio.handle_voice_status),
    "/webhooks/twilio/voice/dial": Adapter("twilio_voice_dial", twilio.handle_dial),
    "/webhooks/twilio/voice/amd": Adapter("twilio_voice_amd", twilio.handle_amd),
    "/webhooks/twilio/voice/voicemail": Adapter("twilio_voice_voicemail", twilio.handle_voicemail),
    "/webhooks/twilio/voice/transcription": Adapter("twilio_voice_transcription", twilio.handle_transcription),
    "/webhooks/twilio/sms/inbound": Adapter("twilio_sms_inbound", twilio.handle_sms_inbound),
    "/webhooks/twilio/sms/status": Adapter("twilio_sms_status", twilio.handle_sms_status),
    # 200 when dead-lettered: RingCentral blacklists a subscription that collects 4xx answers
    "/webhooks/ringcentral": Adapter(
        "ringcentral", ringcentral.handle_notification, header_token("ringcentral", "Verification-Token"), 200
    ),
    "/webhooks/dialpad": Adapter("dialpad", dialpad.handle_call_event, dialpad.vouch),
    "/webhooks/vonage/event": Adapter("vonage_event", vonage.handle_event, vonage.vouch),
}


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

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        # aiohttp's own decompression off: Webhook.body decodes, so a broken stream is a 400 with the
        # bytes as received at hand (aiohttp would raise past the handlers and cut a truncated gzip short).
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            handler_args={"auto_decompress": False},
            middlewares=proxy_middlewares(parse_trusted(self.env.ringback_trusted_proxies)),
        )
        for path, adapter in WEBHOOKS.items():
            app.router.add_post(path, self._endpoint(adapter))
        declare_dead_letter_sources(adapter.endpoint for adapter in WEBHOOKS.values())
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _endpoint(self, adapter: Adapter) -> Callable[[web.Request], Awaitable[web.Response]]:
        name = adapter.endpoint

        async def wrapped(request: web.Request) -> web.Response:
            started = time.perf_counter()
            hook = Webhook(self, name, request, adapter.vouch, adapter.dead_lettered_status)
            try:
                response = await self._handle(adapter, hook)
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

    async def _handle(self, adapter: Adapter, hook: Webhook) -> web.Response:
        """The adapter's handler on the decoded body. A request its `vouch` proves authentic, whose
        body cannot be decoded or names no practice, becomes a dead letter (in `hook`)."""
        try:  # the whole body first, decoded: 413 past MAX_BODY_BYTES, before anything else
            await hook.body()
        except UnreadableBody as exc:
            raise await hook.unreadable(exc) from None
        try:
            return await adapter.handle(hook)
        except Unverifiable as exc:
            raise await hook.unidentified(exc) from None

    # ------------------------------------------------------------------ records, each acknowledged before the answer
    async def produce_events(self, events: Iterable[dict]) -> int:
        """Produce the events the stream app needs, each acknowledged before the next. Every one
        is encoded first: a record the codec refuses (SchemaValidationError) produces none."""
        wanted = [event for event in events if producible(event)]
        encoded = [codec.encode("call_event", event) for event in wanted]
        for event, value in zip(wanted, encoded, strict=True):
            await self.producer.send(self.call_topic, topics.join_key(event["practice_id"], event["caller"]), value)
            EVENTS.labels(
                event["provider"], event["outcome"] or event["event_type"], practice_label(event["practice_id"])
            ).inc()
        return len(wanted)

    async def produce_message_status(self, record: dict) -> None:
        value = codec.encode("message_status", record)
        key = topics.join_key(record["practice_id"], record["recipient"])
        await self.producer.send(self.status_topic, key, value)
        status = record["status"] if record["status"] in _KNOWN_MESSAGE_STATUSES else "other"
        MESSAGE_STATUSES.labels(status).inc()

    async def dead_letter(
        self, source: str, reason: str, raw: bytes, content_type: str | None, practice_id: str | None
    ) -> None:
        record = {
            "source": source,
            "reason": _encodable(reason),
            "raw": raw,
            "content_type": _encodable(content_type) if content_type is not None else None,
            "received_at": self.clock.now_ms(),
            "practice_id": practice_id,
        }
        await self.producer.send(self.dead_topic, source.encode(), codec.encode("dead_letter", record))
        DEAD_LETTERS.labels(source).inc()

    # ------------------------------------------------------------------ health
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.directory.ready:
            return web.json_response({"status": "loading practice directory"}, status=503)
        return web.json_response({"status": "ready", "practices": len(self.directory)})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _encodable(text: str) -> str:
    """Text a dead letter can always hold: a lone surrogate (from an escaped JSON string, or a
    header's undecodable bytes) written as its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def run(env: Settings, host: str = "0.0.0.0", port: int = 8080) -> None:
    directory = PracticeDirectory().follow(env)
    producer = AckedProducer(client_config(env))
    admin.ensure_topics(env, topics.GATEWAY)  # and its principal may write what it does
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
