"""A planned event → the real input, at the moment it is played (pure: `now` comes in).

* webhook providers: the requests the provider sends for that call, in order (a
  ringing/progress callback the gateway acknowledges and drops, then the one that
  says missed / voicemail / answered), signed with the provider's secret; a Twilio
  call forwarded by the ready-made flow (`SimEvent.forward`): the incoming-call webhook,
  then each leg, AMD, `<Dial action>`, recording and parent callback at its own time,
  posted to the URL (and query) the flow's TwiML names (`timeline`);
* the legacy PBX: the line Asterisk's `cdr_csv` appends to `Master.csv`;
* Google Voice: the notification e-mail of a missed call, a voicemail (its transcript in
  the body) or a text (`gvoice_email`), or the audit-log export's CSV (`gvoice_audit_csv`),
  laid out as the samples in tests/vendor/google_voice/ are;
* the EHR: FHIR R4 resources with `meta.lastUpdated` and appointment times filled in.

Timestamps are the wall clock at play time (as a provider would report them); call
lengths are practice seconds (what the caller experienced).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formatdate
from html import escape
from zoneinfo import ZoneInfo

from ringback.dev.simulator import webhooks as wh
from ringback.dev.simulator.plan import (
    AMD,
    ANSWERED,
    CALL,
    DIAL,
    EHR,
    FORWARD_MACHINE,
    FORWARD_MISSED,
    GV_AUDIT_COLUMNS,
    GVOICE,
    INCOMING,
    JUNK,
    LEG_ANSWERED,
    LEG_ENDED,
    MISSED,
    PARENT,
    RECORDED,
    SMS,
    TRANSCRIPT,
    VOICEMAIL,
    Forward,
    SimEvent,
)
from ringback.domain.practice import Practice


@dataclass(frozen=True)
class Secrets:
    """The webhook secret of each provider account (the practices file names them)."""

    twilio: str
    ringcentral: str
    dialpad: str
    vonage: str

    def of(self, provider: str) -> str:
        return getattr(self, provider)


def _iso_ms(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _forge(secret: str) -> str:
    return "forged-" + secret[::-1]


def _call_ids(event: SimEvent) -> tuple[str, str, str]:
    """(provider call id, caller, called number): every call, transcript and SMS of the plan has them."""
    if event.call_id is None or event.caller is None or event.called is None:
        raise ValueError(f"{event.kind} event #{event.seq} has no call id, caller or called number")
    return event.call_id, event.caller, event.called


def _missed_status(event: SimEvent) -> str:
    """The provider's status of a missed call (no-answer, TargetBusy, NO ANSWER, ...): the plan sets it."""
    if event.status is None:
        raise ValueError(f"missed call #{event.seq} has no provider status")
    return event.status


# ---------------------------------------------------------------- webhooks
def webhooks(event: SimEvent, base_url: str, secrets: Secrets, now: float) -> list[wh.Webhook]:
    """The requests of a CALL, TRANSCRIPT, SMS or webhook JUNK event (empty for the others),
    in order, as if posted all at once (`timeline` says when each one goes)."""
    return [hook for _, hook in timeline(event, base_url, secrets, now, math.inf)]


def timeline(
    event: SimEvent, base_url: str, secrets: Secrets, now: float, speed: float
) -> list[tuple[float, wh.Webhook]]:
    """(wall seconds after `now`, request) of an event, in order: a forwarded Twilio call's
    callbacks spread over its practice seconds at `speed`; every other request at once."""
    if event.provider == GVOICE:
        return []  # e-mails or audit-log rows, not webhooks
    if event.forward is not None and event.kind in (CALL, JUNK):
        timed = _twilio_forwarded(event, event.forward, base_url, secrets.twilio, now, speed)
        if event.kind == JUNK:  # a redelivery: Twilio retries the callback that made the call a miss
            return [(0.0, hook) for _, what, hook in timed if what == event.forward.deciding]
        return [(at, hook) for at, _, hook in timed]
    return [(0.0, hook) for hook in _at_once(event, base_url, secrets, now)]


def _at_once(event: SimEvent, base_url: str, secrets: Secrets, now: float) -> list[wh.Webhook]:
    if event.kind == SMS:
        params = wh.twilio_sms_inbound(*_call_ids(event), event.text or "")
        return [wh.twilio(base_url, wh.TWILIO_SMS_INBOUND, params, secrets.twilio)]
    if event.kind == TRANSCRIPT:
        return [_transcript(event, base_url, secrets, now)]
    if event.kind == CALL and event.provider != "cdr":
        return _call(event, base_url, secrets, now)
    if event.kind == JUNK and event.junk in ("forged", "unknown_number", "malformed", "redelivery"):
        final = _call(event, base_url, secrets, now, secret_for=_forge if event.junk == "forged" else None)[-1]
        return [final]
    return []


def _call(
    event: SimEvent,
    base_url: str,
    secrets: Secrets,
    now: float,
    secret_for: Callable[[str], str] | None = None,
) -> list[wh.Webhook]:
    secret = secrets.of(event.provider)
    if secret_for is not None:
        secret = secret_for(secret)
    render = {
        "twilio": _twilio_call,
        "ringcentral": _ringcentral_call,
        "dialpad": _dialpad_call,
        "vonage": _vonage_call,
    }[event.provider]
    return render(event, base_url, secret, now)


def _twilio_call(event: SimEvent, base_url: str, token: str, now: float) -> list[wh.Webhook]:
    stamp = formatdate(math.floor(now), usegmt=True)  # RFC 2822, to the second (as Twilio sends it)
    sid, caller, called = _call_ids(event)
    common = {"Timestamp": stamp, "CallbackSource": "call-progress-events"}
    ringing = wh.twilio_voice_status(sid, caller, called, "ringing", SequenceNumber="0", **common)
    if event.outcome == MISSED:
        final = wh.twilio_voice_status(sid, caller, called, _missed_status(event), SequenceNumber="1", **common)
    elif event.outcome == VOICEMAIL:
        final = wh.twilio_voice_status(
            sid,
            caller,
            called,
            "completed",
            SequenceNumber="2",
            CallDuration=str(event.duration_s),
            RecordingSid="RE" + sid[2:],
            RecordingDuration=str(max(1, event.duration_s - 8)),
            RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/{wh.ACCOUNT_SID}/Recordings/RE{sid[2:]}",
            **common,
        )
    else:
        final = wh.twilio_voice_status(
            sid, caller, called, "completed", SequenceNumber="2", CallDuration=str(event.duration_s), **common
        )
    return [wh.twilio(base_url, wh.TWILIO_VOICE_STATUS, p, token) for p in (ringing, final)]


def _twilio_forwarded(
    event: SimEvent, forward: Forward, base_url: str, token: str, now: float, speed: float
) -> list[tuple[float, str, wh.Webhook]]:
    """(wall seconds after `now`, which callback, request) of a call through the ready-made flow:
    the number's own webhooks (incoming, parent status) at its plain URLs, every other
    callback at the URL with the correlation query the flow's TwiML gives Twilio."""
    sid, caller, called = _call_ids(event)
    leg = forward.leg_sid(sid)
    out = []
    for number, (practice_s, what) in enumerate(forward.callbacks(event.duration_s, event.outcome == VOICEMAIL)):
        wall = practice_s / speed
        stamp = {"Timestamp": formatdate(math.floor(now + wall), usegmt=True), "SequenceNumber": str(number)}
        if what == INCOMING:
            path, params = wh.TWILIO_VOICE_INCOMING, wh.twilio_incoming(sid, caller, called)
        elif what == PARENT:
            path = wh.TWILIO_VOICE_STATUS
            params = wh.twilio_voice_status(sid, caller, called, "completed", CallDuration=str(practice_s), **stamp)
        else:
            path, params = _forward_callback(event, forward, what, leg, practice_s, stamp)
            path = wh.twilio_correlated(path, event.practice_id, sid, caller, called, forward.machine_detection)
        out.append((wall, what, wh.twilio(base_url, path, params, token)))
    return out


def _forward_callback(
    event: SimEvent, forward: Forward, what: str, leg: str, practice_s: int, stamp: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """A leg, AMD, `<Dial action>` or `<Record action>` callback: (path without the query, params)."""
    sid, caller, called = _call_ids(event)
    desk = forward.front_desk
    if what == LEG_ANSWERED:
        return wh.TWILIO_VOICE_STATUS, wh.twilio_leg_status(leg, sid, caller, desk, "in-progress", **stamp)
    if what == AMD:
        return wh.TWILIO_VOICE_AMD, wh.twilio_amd(leg, forward.answered_by or "machine_start")
    if what == LEG_ENDED:
        if forward.front == FORWARD_MISSED:  # the leg rang out (or was busy)
            return wh.TWILIO_VOICE_STATUS, wh.twilio_leg_status(leg, sid, caller, desk, forward.dial_status, **stamp)
        talk = {"CallDuration": str(event.duration_s), **stamp}
        if forward.front == FORWARD_MACHINE and forward.answered_by:
            talk["AnsweredBy"] = forward.answered_by  # Twilio repeats the AMD verdict on the leg's later callbacks
        return wh.TWILIO_VOICE_STATUS, wh.twilio_leg_status(leg, sid, caller, desk, "completed", **talk)
    if what == DIAL:
        talk_s = None if forward.front == FORWARD_MISSED else event.duration_s
        return wh.TWILIO_VOICE_DIAL, wh.twilio_dial_action(sid, caller, called, forward.dial_status, leg, talk_s)
    if what == RECORDED:
        return wh.TWILIO_VOICE_VOICEMAIL, wh.twilio_recorded(sid, caller, called, event.duration_s)
    raise ValueError(f"unknown callback {what!r} of a forwarded call")


def _transcript(event: SimEvent, base_url: str, secrets: Secrets, now: float) -> wh.Webhook:
    if event.provider == "twilio":
        sid, caller, called = _call_ids(event)
        path = wh.TWILIO_TRANSCRIPTION
        if event.forward is not None:  # the ready-made flow's transcribeCallback carries the correlation query
            path = wh.twilio_correlated(path, event.practice_id, sid, caller, called, event.forward.machine_detection)
        params = wh.twilio_transcription(sid, caller, called, event.text or "")
        return wh.twilio(base_url, path, params, secrets.twilio)
    if event.provider == "dialpad":
        claims = _dialpad_claims(event, "voicemail_uploaded", now)
        claims.update(
            transcription_text=event.text or "",
            voicemail_share_link=f"https://dialpad.com/shared/voicemail/{event.call_id}",
        )
        return wh.dialpad(claims, secrets.dialpad)
    raise ValueError(f"{event.provider} sends no transcripts")


def _ringcentral_call(event: SimEvent, base_url: str, token: str, now: float) -> list[wh.Webhook]:
    when = _iso_ms(now)
    session, caller, called = _call_ids(event)
    notes = [wh.ringcentral_session(session, caller, called, "Proceeding", event_time=when)]
    if event.outcome == MISSED:
        notes.append(
            wh.ringcentral_session(
                session, caller, called, "Disconnected", reason=_missed_status(event), missed=True, event_time=when
            )
        )
    elif event.outcome == VOICEMAIL:
        notes.append(wh.ringcentral_session(session, caller, called, "VoiceMail", event_time=when))
    else:
        notes.append(wh.ringcentral_session(session, caller, called, "Answered", event_time=when))
        notes.append(
            wh.ringcentral_session(session, caller, called, "Disconnected", reason="CallerDropped", event_time=when)
        )
    return [wh.ringcentral(n, token) for n in notes]


def _dialpad_claims(event: SimEvent, state: str, now: float, connected: bool = False, duration_ms: int = 0) -> dict:
    ms = int(now * 1000)
    call_id, caller, called = _call_ids(event)
    claims = wh.dialpad_call(int(call_id), state, caller, called, connected=connected, duration_ms=duration_ms)
    claims.update(
        date_started=ms - 1,
        date_rang=ms - 1,
        date_ended=ms if state != "ringing" else None,
        event_timestamp=ms,
        entry_point_target={"phone": called, "type": "office"},
        date_connected=ms - 1 if connected else None,
    )
    return claims


def _dialpad_call(event: SimEvent, base_url: str, secret: str, now: float) -> list[wh.Webhook]:
    claims = [_dialpad_claims(event, "ringing", now)]
    if event.outcome == MISSED:
        claims.append(_dialpad_claims(event, "missed", now))
    elif event.outcome == VOICEMAIL:
        claims.append(_dialpad_claims(event, "voicemail", now))
    else:
        claims.append(_dialpad_claims(event, "connected", now, connected=True))
        claims.append(_dialpad_claims(event, "hangup", now, connected=True, duration_ms=event.duration_s * 1000))
    return [wh.dialpad(c, secret) for c in claims]


def _vonage_call(event: SimEvent, base_url: str, secret: str, now: float) -> list[wh.Webhook]:
    when = _iso_ms(now)
    uuid_, caller, called = _call_ids(event)
    payloads = [
        wh.vonage_event(uuid_, "started", caller, called, timestamp=when),
        wh.vonage_event(uuid_, "ringing", caller, called, timestamp=when),
    ]
    if event.outcome == ANSWERED:
        payloads.append(wh.vonage_event(uuid_, "answered", caller, called, timestamp=when))
        payloads.append(
            wh.vonage_event(
                uuid_,
                "completed",
                caller,
                called,
                timestamp=when,
                duration=str(event.duration_s),
                start_time=when,
                end_time=when,
            )
        )
    else:  # missed (Vonage reports no inbound voicemail of its own)
        payloads.append(wh.vonage_event(uuid_, event.status or "unanswered", caller, called, timestamp=when))
    return [wh.vonage(p, secret, iat=int(now)) for p in payloads]


# ---------------------------------------------------------------- Google Voice
GV_SENDER = "Google Voice <voice-noreply@google.com>"
GV_FOOTER = """YOUR ACCOUNT <https://voice.google.com/settings> HELP CENTER
<https://support.google.com/voice#topic=1707989> HELP FORUM
<https://productforums.google.com/forum/#!forum/voice>
This email was sent to you because you indicated that you'd like to receive
email notifications for {what}. If you don't want to receive such emails
in the future, please update your email notification settings
<https://voice.google.com/settings#messaging>.

Google LLC
1600 Amphitheatre Pkwy
Mountain View CA 94043 USA
"""


def _written(e164: str) -> str:
    """A number as Google Voice writes it: (415) 555-0142."""
    digits = _national(e164)
    return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}" if len(digits) == 10 else e164


def gvoice_email(event: SimEvent, practice: Practice, now: float) -> bytes | None:
    """The notification e-mail Google Voice sends for an event of a Google Voice practice
    reading its e-mails (None: it sends none, as for an answered call). `Date` is `now`; the
    Message-ID is the plan's (`call_id`), so the watcher's event ids are the planned ones."""
    if event.provider != GVOICE or event.call_id is None:
        return None
    if event.kind == CALL and event.event_id is None:
        return None  # an answered call: Google Voice sends nothing
    if event.kind == JUNK and event.junk not in ("unreadable", "redelivery"):
        return None
    local = datetime.fromtimestamp(math.floor(now), ZoneInfo(practice.time_zone))
    msg = EmailMessage()
    msg["Date"] = format_datetime(local)
    msg["To"] = f"frontdesk@{practice.id}.example.org"
    msg["Message-ID"] = event.call_id
    if event.junk == "unreadable":
        msg["From"] = GV_SENDER
        msg["Subject"] = "Your Google Voice number will be reclaimed soon"
        msg.set_content("Your Google Voice number has not been used for a while.\n")
        return msg.as_bytes()
    caller, called = event.caller or "", event.called or ""
    who, clock = _written(caller), local.strftime("%I:%M %p").lstrip("0")
    if event.kind == SMS:
        # The reply-by-e-mail address carries the Google Voice number and the sender's.
        token = event.call_id.strip("<>").split("@")[0][:10]
        msg["From"] = f'"{who}" <{called.lstrip("+")}.{caller.lstrip("+")}.{token}@txt.voice.google.com>'
        msg["Subject"] = f"New text message from {who}"
        lines = [event.text or "", "", "To respond to this text message, reply to this email or visit Google Voice."]
        what = "text messages"
    elif event.outcome == VOICEMAIL:
        msg["From"] = GV_SENDER
        msg["Subject"] = f"New voicemail from {who} at {clock}"
        link = "https://voice.google.com/voicemail/message/" + event.call_id.strip("<>").split("@")[0]
        transcript = event.text or "(Transcript not available)"
        lines = ["Google Voice", "", who, "Voicemail", transcript, "", f"play message <{link}>"]
        what = "voicemails"
    else:
        msg["From"] = GV_SENDER
        msg["Subject"] = f"New missed call from {who}"
        lines = ["Google Voice", "", who, "Missed call", clock, "", "Call back: https://voice.google.com/calls"]
        what = "missed calls"
    msg.set_content("\n".join(lines) + "\n\n" + GV_FOOTER.format(what=what))
    rows = "".join(f"<tr><td>{escape(line)}</td></tr>" for line in lines if line)
    msg.add_alternative(f"<html><body><table>{rows}</table></body></html>", subtype="html")
    return msg.as_bytes()


def gvoice_audit_csv(rows: Iterable[tuple[str, ...]]) -> str:
    """A Voice audit-log export (the Admin console's CSV) of the rows the plan made."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(GV_AUDIT_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------- legacy PBX (Asterisk cdr_csv)
def _national(e164: str) -> str:
    return e164[2:] if e164.startswith("+1") else e164.lstrip("+")


def cdr_line(event: SimEvent, practice: Practice, now: float) -> bytes:
    """The `Master.csv` line (with its newline) Asterisk writes when the call ends."""
    if event.kind == JUNK:
        return b'"","7735550000","' + _national(practice.phone_numbers[0]).encode() + b'","from-trunk","\n'
    local = datetime.fromtimestamp(math.floor(now), tz=ZoneInfo(practice.time_zone)).replace(tzinfo=None)
    start = local.strftime("%Y-%m-%d %H:%M:%S")
    call_id, caller, called = _call_ids(event)
    src, dst = _national(caller), _national(called)
    ring = 25 if event.outcome == MISSED else 12
    if event.outcome == MISSED:
        disposition, app, data, dstchannel, billsec, answer = (
            _missed_status(event),
            "Dial",
            "PJSIP/201&PJSIP/202,25",
            f"PJSIP/201-{int(now * 1000) % 16**8:08x}",
            0,
            "",
        )
    elif event.outcome == VOICEMAIL:
        disposition, app, data, dstchannel, billsec, answer = (
            "ANSWERED",
            "VoiceMail",
            "201@default,u",
            "",
            event.duration_s,
            start,
        )
    else:
        disposition, app, data, dstchannel, billsec, answer = (
            "ANSWERED",
            "Dial",
            "PJSIP/201&PJSIP/202,25",
            f"PJSIP/202-{int(now * 1000) % 16**8:08x}",
            event.duration_s,
            start,
        )
    end = start  # the line is written as the call ends: now, to the second
    row = [
        "",
        src,
        dst,
        "ext-group",
        f"WIRELESS CALLER <{src}>",
        f"PJSIP/trunk-{int(now * 1000) % 16**8:08x}",
        dstchannel,
        app,
        data,
        start,
        answer,
        end,
        str(ring + billsec),
        str(billsec),
        disposition,
        "DOCUMENTATION",
        call_id,
        "",
    ]
    numeric = {12, 13}  # cdr_csv quotes text fields and leaves the numbers bare
    return (",".join(col if i in numeric else _quote(col) for i, col in enumerate(row)) + "\n").encode()


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


# ---------------------------------------------------------------- EHR (FHIR R4)
def fhir_resources(event: SimEvent, now: float) -> list[dict]:
    """The event's resources with their times: `meta.lastUpdated` = now - `_updated_ago_s`,
    Appointment `start` = now + `_start_in_s` (`end` `_minutes` later)."""
    if event.kind != EHR:
        return []
    out = []
    for template in event.resources:
        resource = {k: v for k, v in template.items() if not k.startswith("_")}
        updated = now - float(template.get("_updated_ago_s", 0))
        resource["meta"] = {"lastUpdated": _iso_ms(updated), "versionId": "1"}
        if "_start_in_s" in template:
            start = datetime.fromtimestamp(now + float(template["_start_in_s"]), tz=UTC)
            start = start.replace(minute=(start.minute // 15) * 15, second=0, microsecond=0)
            resource["start"] = start.isoformat()
            resource["end"] = (start + timedelta(minutes=int(template.get("_minutes", 20)))).isoformat()
        if resource.get("resourceType") == "Flag":
            resource["period"] = {"start": _iso_ms(updated)}
        out.append(resource)
    return out
