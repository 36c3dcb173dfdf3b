"""The Twilio voice endpoints of the ready-made call flow, through the gateway in-process
(aiohttp TestServer, an in-memory producer: the path from request to records and answer;
the broker is met in tests/sources/test_twilio_forwarded_calls.py).

A call is followed the way Twilio follows it: the incoming webhook's TwiML gives the
callback URLs, and each callback is signed over the URL it names (query included)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.dev.simulator import webhooks as wh
from ringback.domain.practice import CallFlow, Practice
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas import codec
from ringback.sources.gateway import Gateway
from tests.sources.recording_producer import RecordingProducer

PUBLIC = "https://gateway.example.org/ringback"  # behind a proxy, under a path prefix
TOKEN, ACCOUNT_TOKEN = "maple-twilio-token", "account-twilio-token"
MAPLE, BIRCH, DESK, CELL = "+13125550100", "+12065550111", "+13125550181", "+13125550182"
CALLER = "+14155550123"
PARENT, LEG = "CA" + "1" * 32, "CA" + "2" * 32


def practices() -> list[Practice]:
    common = {"time_zone": "America/Chicago", "booking_link": "https://book.example.org/x"}
    return [
        Practice(
            id="maple",
            name="Maple",
            phone_numbers=[MAPLE],
            sms_from=MAPLE,
            secrets={"twilio_auth_token": "GW_MAPLE_TOKEN"},
            call_flow=CallFlow(front_desk=[DESK, CELL], ring_seconds=20),
            **common,
        ),
        # no call_flow: its own TwiML; the account-wide token
        Practice(id="birch", name="Birch", phone_numbers=[BIRCH], sms_from=BIRCH, **common),
    ]


class Served:
    def __init__(self, env: Settings) -> None:
        self.producer = RecordingProducer()
        self.gateway = Gateway(env, PracticeDirectory(practices()), self.producer, ManualClock(1_772_550_280))
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start())

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.gateway.app()))
        await client.start_server()
        return client

    def post(self, hook: wh.Webhook) -> tuple[int, str]:
        async def go():
            async with self.client.post(hook.path, data=hook.body, headers=hook.headers) as resp:
                return resp.status, await resp.text()

        return self.loop.run_until_complete(go())

    def events(self) -> list[dict]:
        return [codec.decode("call_event", v) for _, v, _ in self.producer.records("call-events")]

    def dead_letters(self) -> list[dict]:
        return [codec.decode("dead_letter", v) for _, v, _ in self.producer.records("dead-letters")]

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture
def served(tmp_path):
    (tmp_path / "GW_MAPLE_TOKEN").write_text(TOKEN)
    env = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        ringback_namespace="twiliogw",
        ringback_secrets_dir=tmp_path,
        ringback_public_url=PUBLIC,
        twilio_auth_token=ACCOUNT_TOKEN,
    )
    s = Served(env)
    yield s
    s.close()


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> wh.Webhook:
    """A callback to a URL of our TwiML, signed as Twilio signs it (the full URL)."""
    assert url.startswith(PUBLIC + "/webhooks/twilio/voice/")
    return wh.twilio(PUBLIC, url.removeprefix(PUBLIC), params, token)


def test_a_call_followed_through_every_url_of_the_flow(served):
    status, twiml = served.post(
        wh.twilio(PUBLIC, wh.TWILIO_VOICE_INCOMING, wh.twilio_incoming(PARENT, CALLER, MAPLE), TOKEN)
    )
    assert status == 200 and served.events() == []
    dial = ET.fromstring(twiml).find("Dial")
    assert dial is not None and dial.attrib["timeout"] == "20"
    desk, cell = dial.findall("Number")
    assert (desk.text, cell.text) == (DESK, CELL)
    query = urlsplit(dial.attrib["action"]).query
    assert query == wh.twilio_correlated("", "maple", PARENT, CALLER, MAPLE, amd=True).lstrip("?")

    # The cell's voicemail picks up: answered (not yet a person: machine detection is on), then AMD says machine.
    answered = wh.twilio_leg_status(LEG, PARENT, CALLER, CELL, "in-progress")
    assert served.post(signed(cell.attrib["statusCallback"], answered))[0] == 204
    assert served.events() == []
    assert served.post(signed(cell.attrib["amdStatusCallback"], wh.twilio_amd(LEG, "machine_end_beep")))[0] == 204
    ended = wh.twilio_leg_status(LEG, PARENT, CALLER, CELL, "completed", CallDuration="40")
    assert served.post(signed(cell.attrib["statusCallback"], ended))[0] == 204

    # The Dial ends: nobody answered (say): the answer is the voicemail fallback.
    no_answer = wh.twilio_dial_action(PARENT, CALLER, MAPLE, "no-answer", LEG)
    status, after = served.post(signed(dial.attrib["action"], no_answer))
    assert status == 200
    say, record = list(ET.fromstring(after))
    assert say.tag == "Say" and record.tag == "Record"
    assert served.post(signed(record.attrib["action"], wh.twilio_recorded(PARENT, CALLER, MAPLE, 30)))[0] == 200
    transcript = wh.twilio_transcription(PARENT, CALLER, MAPLE, "Please call me back.")
    assert served.post(signed(record.attrib["transcribeCallback"], transcript))[0] == 204

    events = served.events()
    assert [(e["event_id"], e["outcome"], e["signal"], e["leg_id"]) for e in events] == [
        (f"twilio:{PARENT}:machine-{LEG}", "MISSED", "machine", LEG),
        (f"twilio:{PARENT}:dial-no-answer", "MISSED", "leg", LEG),
        (f"twilio:{PARENT}:voicemail", "VOICEMAIL", "parent", None),
        (f"twilio:{PARENT}:transcription", "VOICEMAIL", None, None),
    ]
    assert {(e["practice_id"], e["caller"], e["called"], e["provider_call_id"]) for e in events} == {
        ("maple", CALLER, MAPLE, PARENT)
    }
    keys = {k for k, _, _ in served.producer.records("call-events")}
    assert keys == {f"maple|{CALLER}".encode()}


def test_with_machine_detection_a_person_is_known_from_the_amd_verdict(served):
    _, twiml = served.post(
        wh.twilio(PUBLIC, wh.TWILIO_VOICE_INCOMING, wh.twilio_incoming(PARENT, CALLER, MAPLE), TOKEN)
    )
    desk = ET.fromstring(twiml).find("Dial").findall("Number")[0]  # type: ignore[union-attr]  # the TwiML has a Dial
    answered = wh.twilio_leg_status(LEG, PARENT, CALLER, DESK, "in-progress")
    assert served.post(signed(desk.attrib["statusCallback"], answered))[0] == 204
    assert served.events() == []  # a machine could have picked up
    assert served.post(signed(desk.attrib["amdStatusCallback"], wh.twilio_amd(LEG, "human")))[0] == 204
    assert [(e["event_id"], e["outcome"], e["signal"]) for e in served.events()] == [
        (f"twilio:{PARENT}:answered-{LEG}", "ANSWERED", "leg")
    ]


def test_an_answered_dial_hangs_up(served):
    completed = wh.twilio_dial_action(PARENT, CALLER, MAPLE, "completed", LEG, 95)
    hook = wh.twilio(
        PUBLIC, wh.twilio_correlated(wh.TWILIO_VOICE_DIAL, "maple", PARENT, CALLER, MAPLE), completed, TOKEN
    )
    status, twiml = served.post(hook)
    assert status == 200 and [e.tag for e in ET.fromstring(twiml)] == ["Hangup"]
    assert [e["outcome"] for e in served.events()] == ["ANSWERED"]


@pytest.mark.parametrize(
    "path",
    [wh.TWILIO_VOICE_INCOMING, wh.TWILIO_VOICE_DIAL, wh.TWILIO_VOICE_AMD, wh.TWILIO_VOICE_VOICEMAIL],
)
def test_unsigned_or_forged_requests_are_refused_and_store_nothing(served, path):
    params = wh.twilio_dial_action(PARENT, CALLER, MAPLE, "no-answer", LEG) | wh.twilio_amd(LEG, "fax")
    url = wh.twilio_correlated(path, "maple", PARENT, CALLER, MAPLE)
    assert served.post(wh.twilio(PUBLIC, url, params, None))[0] == 403
    assert served.post(wh.twilio(PUBLIC, url, params, "not-the-token"))[0] == 403
    # a genuine signature over another URL (the query changed to another caller)
    genuine = wh.twilio(PUBLIC, url, params, TOKEN)
    other = wh.Webhook(url.replace("%2B1415", "%2B1416"), genuine.body, genuine.headers)
    assert served.post(other)[0] == 403
    assert served.producer.sent == []


def test_incoming_for_a_number_nobody_owns_or_a_practice_without_call_flow(served):
    stranger = wh.twilio(PUBLIC, wh.TWILIO_VOICE_INCOMING, wh.twilio_incoming(PARENT, CALLER, "+13125550199"), None)
    assert served.post(stranger)[0] == 403  # the account-wide token is checked first
    stranger = wh.twilio(
        PUBLIC, wh.TWILIO_VOICE_INCOMING, wh.twilio_incoming(PARENT, CALLER, "+13125550199"), ACCOUNT_TOKEN
    )
    status, body = served.post(stranger)
    assert status == 404 and "unknown_number" in body
    birch = wh.twilio(PUBLIC, wh.TWILIO_VOICE_INCOMING, wh.twilio_incoming(PARENT, CALLER, BIRCH), ACCOUNT_TOKEN)
    status, body = served.post(birch)
    assert status == 404 and "no_call_flow" in body and "birch" in body
    assert served.producer.sent == []


def test_a_withheld_caller_still_rings_the_front_desk(served):
    params = wh.twilio_incoming(PARENT, "anonymous", MAPLE)
    status, twiml = served.post(wh.twilio(PUBLIC, wh.TWILIO_VOICE_INCOMING, params, TOKEN))
    assert status == 200
    dial = ET.fromstring(twiml).find("Dial")
    assert dial is not None and [n.text for n in dial] == [DESK, CELL]
    assert dial.attrib["action"] == f"{PUBLIC}{wh.TWILIO_VOICE_DIAL}?practice=maple"


def test_leg_callbacks_of_an_unknown_practice_or_without_correlation(served):
    amd = wh.twilio_amd(LEG, "machine_start")
    unknown = wh.twilio_correlated(wh.TWILIO_VOICE_AMD, "elm", PARENT, CALLER, MAPLE)
    status, body = served.post(wh.twilio(PUBLIC, unknown, amd, ACCOUNT_TOKEN))
    assert status == 404 and "unknown_practice" in body
    assert served.post(wh.twilio(PUBLIC, unknown, amd, "forged"))[0] == 403
    assert served.producer.sent == []
    # A practice's own TwiML without the query: authentic, unusable → 400 + dead letter, saying what to add.
    status, body = served.post(wh.twilio(PUBLIC, wh.TWILIO_VOICE_AMD, amd, ACCOUNT_TOKEN))
    assert status == 400 and "?practice=" in body
    leg = wh.twilio_leg_status(LEG, PARENT, CALLER, DESK, "in-progress")
    assert served.post(wh.twilio(PUBLIC, wh.TWILIO_VOICE_STATUS, leg, ACCOUNT_TOKEN))[0] == 400
    [first, second] = served.dead_letters()
    assert (first["source"], second["source"]) == ("twilio_voice_amd", "twilio_voice_status")
    assert first["raw"] == wh.twilio(PUBLIC, wh.TWILIO_VOICE_AMD, amd, ACCOUNT_TOKEN).body
    assert served.events() == []


def test_signed_but_unusable_payloads_are_dead_letters(served):
    bad_caller = wh.twilio_correlated(wh.TWILIO_VOICE_AMD, "maple", PARENT, "anonymous", MAPLE)
    status, body = served.post(wh.twilio(PUBLIC, bad_caller, wh.twilio_amd(LEG, "fax"), TOKEN))
    assert status == 400 and "caller" in body
    # The Dial action of a withheld caller: a dead letter, and the caller still reaches the voicemail.
    dial = wh.twilio_dial_action(PARENT, "anonymous", MAPLE, "no-answer", LEG)
    status, twiml = served.post(wh.twilio(PUBLIC, wh.TWILIO_VOICE_DIAL + "?practice=maple", dial, TOKEN))
    assert status == 200 and [e.tag for e in ET.fromstring(twiml)] == ["Say", "Record"]
    assert [d["source"] for d in served.dead_letters()] == ["twilio_voice_amd", "twilio_voice_dial"]
    assert all(d["practice_id"] == "maple" for d in served.dead_letters())
    assert served.events() == []


def test_a_practice_on_its_own_twiml_pointing_the_dial_action_here(served):
    """No query: the Dial action names the practice number (To) and the caller (From)."""
    dial = wh.twilio_dial_action(PARENT, CALLER, BIRCH, "busy", LEG)
    status, twiml = served.post(wh.twilio(PUBLIC, wh.TWILIO_VOICE_DIAL, dial, ACCOUNT_TOKEN))
    assert status == 200 and [e.tag for e in ET.fromstring(twiml)] == ["Hangup"]  # no call_flow: no voicemail
    [event] = served.events()
    assert (event["practice_id"], event["caller"], event["outcome"], event["signal"]) == (
        "birch",
        CALLER,
        "MISSED",
        "leg",
    )
