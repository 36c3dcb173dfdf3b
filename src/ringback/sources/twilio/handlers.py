"""The request handlers the gateway routes Twilio's webhooks to (`handle_*`): the
`X-Twilio-Signature` check, the practice, what to produce, and the TwiML answer where
Twilio runs one (the incoming call, the `<Dial action>`, the `<Record action>`).

The practice comes from `?practice=<id>` in the callback URL when there is one (the
ready-made call flow and the SMS sinks put it there; the signature covers the URL), else
from the practice number of the payload. A signed payload that cannot be used is a dead
letter; where Twilio is running the call on our answer it still gets its TwiML, so a
caller never hears an application error because of a record we could not make.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ringback.domain.practice import Practice
from ringback.sources.canonical import PayloadError, safe_e164, text
from ringback.sources.twilio import call_flow
from ringback.sources.twilio.callbacks import (
    Correlation,
    amd_events,
    dial_action_event,
    is_dialed_leg,
    leg_status_events,
    message_status_record,
    practice_number,
    signature_valid,
    sms_event,
    transcription_event,
    voice_status_event,
    voicemail_event,
)
from ringback.sources.webhook import Reject, Webhook

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# What a callback of one kind becomes: (the form fields, the practice id, received at) → a call event.
CallEventOf = Callable[[Mapping[str, str], str, int], dict]
UNCORRELATED = (
    "a <Dial>ed leg's callback names no practice: its URL needs "
    "?practice=<id>&call=<parent CallSid>&caller=<E.164>&called=<E.164> (see docs/providers/twilio.md)"
)


def _first_values(form: Mapping[str, Any]) -> dict[str, str]:
    """Each field's first value (the signature covers every value; the records use the first)."""
    params: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(value, str):
            params.setdefault(key, value)
    return params


def _twiml(xml: str) -> web.Response:
    return web.Response(status=200, text=xml, content_type="text/xml")


def _base_url(hook: Webhook) -> str:
    """The public URL ringback is reached at, as the signature check sees it."""
    return hook.public_url().removesuffix(hook.request.raw_path)


def _authenticate(hook: Webhook, practice: Practice | None, number: str | None, form: Mapping[str, Any]) -> None:
    """403 unless `X-Twilio-Signature` is valid for the practice's (else the account's) auth token."""
    url = hook.public_url()
    signature = hook.request.headers.get("X-Twilio-Signature")
    if not signature:
        raise Reject(403, "signature", "missing X-Twilio-Signature")
    hook.authenticate("twilio", practice, number, lambda token: signature_valid(token, url, form, signature))


async def _signed(hook: Webhook, practice: Practice | None, number: str | None, form: Mapping[str, Any]) -> Practice:
    """The practice, once `X-Twilio-Signature` is valid for its auth token (403 / 404 otherwise)."""
    _authenticate(hook, practice, number, form)
    return await hook.require_practice(practice, number)


async def _signed_practice(hook: Webhook, form: Mapping[str, Any], number: str | None) -> Practice:
    """The practice of `?practice=` in the (signed) URL, else of the payload's practice number."""
    practice_id = hook.request.query.get("practice")
    if not practice_id:
        return await _signed(hook, hook.practice_by_number(number), number, form)
    practice = hook.practice_by_id(practice_id)
    if practice is None:
        # Check with the account-wide token when there is one (403 on forgery), then 404.
        token = hook.secret("twilio", None)
        signature = hook.request.headers.get("X-Twilio-Signature")
        if token and not signature_valid(token, hook.public_url(), form, signature):
            raise Reject(403, "signature", "missing or invalid X-Twilio-Signature")
        raise Reject(404, "unknown_practice", "the practice in the callback URL is not configured")
    return await _signed(hook, practice, None, form)


async def _correlated(hook: Webhook, form: Mapping[str, Any]) -> tuple[Practice, Correlation]:
    """A leg's callback: the call it belongs to, from the signed URL's query."""
    if not hook.request.query.get("practice"):
        _authenticate(hook, None, None, form)  # 403 unless the account-wide token signed it
        raise await hook.malformed(PayloadError(UNCORRELATED), None)
    practice = await _signed_practice(hook, form, None)
    try:
        return practice, Correlation.from_query(hook.request.query, practice.id)
    except PayloadError as exc:
        raise await hook.malformed(exc, practice) from None


async def _produced(hook: Webhook, practice: Practice, parse: Callable[[], Iterable[dict]]) -> list[dict] | None:
    """Produce what `parse()` makes; None (and a dead letter) when the payload is unusable.
    For the callbacks whose answer Twilio runs: the caller gets the TwiML either way."""
    events: list[dict] = []

    def parse_into() -> list[dict]:
        events.extend(parse())
        return events

    try:
        await hook.produce(practice, parse_into)
    except Reject as rej:
        if rej.reason != "malformed":
            raise
        return None
    return events


# ---------------------------------------------------------------------------------- voice
async def handle_incoming(hook: Webhook) -> web.Response:
    """Twilio's incoming-call webhook of a practice number: the ready-made call flow."""
    form = await hook.form()
    params = _first_values(form)
    number = practice_number(params)
    practice = await _signed(hook, hook.practice_by_number(number), number, form)
    if practice.call_flow is None:
        raise Reject(
            404,
            "no_call_flow",
            f"practice {practice.id} has no call_flow in the practices file: it is not set up for the ready-made flow",
        )
    try:
        call_sid = text(params, "CallSid", max_len=64)
    except PayloadError as exc:
        raise await hook.malformed(exc, practice) from None
    caller = safe_e164(params.get("From"))
    flow = practice.call_flow
    corr = Correlation(practice.id, call_sid, caller, number, flow.machine_detection) if caller and number else None
    return _twiml(call_flow.incoming_twiml(practice.call_flow, _base_url(hook), practice.id, corr))


async def handle_dial(hook: Webhook) -> web.Response:
    """The `<Dial action>`: the forward's verdict, then the rest of the call (voicemail or hang up)."""
    form = await hook.form()
    params = _first_values(form)
    practice = await _signed_practice(hook, form, practice_number(params))
    events = await _produced(hook, practice, lambda: [dial_action_event(params, practice.id, hook.now_ms())])
    answered = bool(events) and events is not None and events[0]["outcome"] == "ANSWERED"
    query = hook.request.rel_url.raw_query_string or urlencode({"practice": practice.id})
    return _twiml(call_flow.after_dial_twiml(practice.call_flow, _base_url(hook), query, answered))


async def handle_voicemail(hook: Webhook) -> web.Response:
    """The `<Record action>` of the voicemail fallback."""
    form = await hook.form()
    params = _first_values(form)
    practice = await _signed_practice(hook, form, practice_number(params))
    await _produced(hook, practice, lambda: voicemail_event(params, practice.id, hook.now_ms()))
    return _twiml(call_flow.hangup_twiml())


async def handle_voice_status(hook: Webhook) -> web.Response:
    """A status callback: of the call itself (the parent), or of a `<Dial>`ed leg."""
    form = await hook.form()
    params = _first_values(form)
    if is_dialed_leg(params):
        practice, corr = await _correlated(hook, form)
        await hook.produce(practice, lambda: leg_status_events(params, corr, hook.now_ms()))
    else:
        practice = await _signed_practice(hook, form, practice_number(params))
        await hook.produce(practice, lambda: [voice_status_event(params, practice.id, hook.now_ms())])
    return web.Response(status=204)


async def handle_amd(hook: Webhook) -> web.Response:
    """A leg's `amdStatusCallback`: an answering machine or fax is not a person answering."""
    form = await hook.form()
    params = _first_values(form)
    practice, corr = await _correlated(hook, form)
    await hook.produce(practice, lambda: amd_events(params, corr, hook.now_ms()))
    return web.Response(status=204)


async def handle_transcription(hook: Webhook) -> web.Response:
    form = await hook.form()
    params = _first_values(form)
    practice = await _signed_practice(hook, form, practice_number(params))
    await hook.produce(practice, lambda: [transcription_event(params, practice.id, hook.now_ms())])
    return web.Response(status=204)


# ---------------------------------------------------------------------------------- messaging
async def handle_sms_inbound(hook: Webhook) -> web.Response:
    form = await hook.form()
    params = _first_values(form)
    number = practice_number(params)
    practice = await _signed(hook, hook.practice_by_number(number), number, form)
    await hook.produce(practice, lambda: [sms_event(params, practice.id, hook.now_ms())])
    # Empty TwiML: no automatic reply (the stream app decides what to send).
    return _twiml(TWIML_EMPTY)


async def handle_sms_status(hook: Webhook) -> web.Response:
    """Delivery receipt of an SMS we sent. The sinks put `?practice=<id>&action=<id>` in
    the status-callback URL; without it the sender number may still be a practice's."""
    form = await hook.form()
    params = _first_values(form)
    practice = await _signed_practice(hook, form, safe_e164(params.get("From")))
    try:
        action_id = hook.request.query.get("action")
        if action_id is not None and len(action_id) > 256:
            raise PayloadError("action is longer than 256 characters")
        record = message_status_record(params, practice.id, action_id, hook.now_ms())
    except PayloadError as exc:
        raise await hook.malformed(exc, practice) from None
    await hook.produce_message_status(record)
    return web.Response(status=204)
