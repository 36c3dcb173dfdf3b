"""The webhook gateway (`ringback ingest`): phone-system webhooks in, call events out.

Each request: verify the provider's signature first (403), find the practice from
the called number (404), turn the payload into a canonical call event (400 and a
dead letter when it cannot be), produce it and answer 2xx only once the broker
acknowledged it (503 when it does not, so the provider retries).
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from connectors.kafka_producer import AckedProducer, BrokerUnavailable
from connectors.sources import twilio as twilio_source
from ringback.clock import Clock
from ringback.practice_directory import PracticeDirectory
from ringback.settings import Settings, read_secret
from schemas import codec
from streams import topics

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

REQUESTS = Counter("ringback_gateway_requests_total", "Webhook requests by endpoint and status",
                   ["endpoint", "status"])
EVENTS = Counter("ringback_call_events_total", "Canonical call events produced",
                 ["provider", "outcome"])
REJECTED = Counter("ringback_rejected_inputs_total", "Inputs rejected, by reason", ["endpoint", "reason"])
DEAD_LETTERS = Counter("ringback_dead_letters_total", "Records sent to the dead-letter topic", ["source"])
ACK_LATENCY = Histogram("ringback_gateway_ack_seconds", "Request received to broker acknowledgement",
                        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class Reject(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Gateway:
    def __init__(self, env: Settings, directory: PracticeDirectory, producer: AckedProducer,
                 clock: Clock | None = None) -> None:
        self.env = env
        self.directory = directory
        self.producer = producer
        self.clock = clock or Clock()
        self.call_topic = topics.topic_name(topics.CALL_EVENTS, env)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)

    # ------------------------------------------------------------------ plumbing
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/webhooks/twilio/voice/status",
                            self._endpoint("twilio_voice_status", self.twilio_voice_status))
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _endpoint(self, name: str, handler: Callable[[web.Request], Awaitable[web.Response]]):
        async def wrapped(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except Reject as rej:
                REJECTED.labels(name, rej.reason).inc()
                response = web.json_response({"error": rej.reason, "message": rej.message}, status=rej.status)
            except web.HTTPRequestEntityTooLarge:
                REJECTED.labels(name, "too_large").inc()
                response = web.json_response(
                    {"error": "too_large", "message": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
            except BrokerUnavailable as exc:
                log.warning("broker unavailable, answering 503: %s", exc)
                response = web.json_response(
                    {"error": "unavailable", "message": "event not stored; retry"}, status=503,
                    headers={"Retry-After": "5"})
            except Exception:  # noqa: BLE001 - never crash on input; say 500 honestly and log
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
        if self.env.ringback_public_url:
            return self.env.ringback_public_url.rstrip("/") + request.path_qs
        return str(request.url)

    async def _form(self, request: web.Request):
        """The form fields as posted (a multidict: names may repeat, and the signature covers all)."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise Reject(415, "content_type", "expected application/x-www-form-urlencoded")
        try:
            return await request.post()
        except ValueError as exc:
            raise Reject(400, "unreadable_body", f"cannot read the form body: {exc}") from None

    async def _produce(self, key: bytes, record: dict) -> None:
        await self.producer.send(self.call_topic, key, codec.encode("call_event", record))
        EVENTS.labels(record["provider"], record["outcome"] or record["event_type"]).inc()

    async def dead_letter(self, source: str, reason: str, raw: bytes, content_type: str | None,
                          practice_id: str | None) -> None:
        record = {"source": source, "reason": reason, "raw": raw, "content_type": content_type,
                  "received_at": self._now_ms(), "practice_id": practice_id}
        await self.producer.send(self.dead_topic, source.encode(), codec.encode("dead_letter", record))
        DEAD_LETTERS.labels(source).inc()

    def _twilio_token(self, practice_id: str | None) -> str | None:
        practice = self.directory.by_id(practice_id) if practice_id else None
        if practice and "twilio_auth_token" in practice.secrets:
            return read_secret(practice.secrets["twilio_auth_token"], self.env)
        return self.env.twilio_auth_token

    # ------------------------------------------------------------------ endpoints
    async def twilio_voice_status(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        practice = self.directory.by_number(_safe_e164(form.get("To")))
        token = self._twilio_token(practice.id if practice else None)
        if not token or not twilio_source.signature_valid(
                token, self._public_url(request), form, request.headers.get("X-Twilio-Signature")):
            raise Reject(403, "signature", "missing or invalid X-Twilio-Signature")
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        if practice is None:
            raise Reject(404, "unknown_number", "the called number belongs to no configured practice")
        try:
            event = twilio_source.voice_status_event(params, practice.id, self._now_ms())
        except twilio_source.PayloadError as exc:
            await self.dead_letter("twilio_voice_status", str(exc), await request.read(),
                                   request.content_type, practice.id)
            raise Reject(400, "malformed", str(exc)) from None
        if event["outcome"] == "OTHER":
            return web.Response(status=204)  # ringing / in-progress: nothing to act on
        await self._produce(topics.join_key(practice.id, event["caller"]), event)
        return web.Response(status=204)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.directory.ready:
            return web.json_response({"status": "loading practice directory"}, status=503)
        return web.json_response({"status": "ready", "practices": len(self.directory)})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _safe_e164(raw: str | None) -> str:
    from ringback.settings import to_e164

    try:
        return to_e164(raw or "")
    except ValueError:
        return ""


def run(env: Settings, host: str = "0.0.0.0", port: int = 8080) -> None:
    directory = PracticeDirectory().follow(env)
    producer = AckedProducer(env.kafka_bootstrap_servers)
    topics.ensure_topics(env)
    directory.wait_ready(30)
    gateway = Gateway(env, directory, producer)
    try:
        web.run_app(gateway.app(), host=host, port=port, access_log=None, print=None)
    finally:
        producer.close()
        directory.close()
