"""The RingCentral endpoint, in-process, on the real broker: whole sessions posted as
RingCentral delivers them (out of order, twice), the shapes refused before (the caller's own
Outbound party, internal calls with extension numbers), and authentic notifications that
cannot become an event: 200 + a dead letter, never a 4xx RingCentral would keep resending."""

from __future__ import annotations

import json
import random
import uuid

import pytest
from prometheus_client import REGISTRY

from ringback.config.settings import Settings
from ringback.kafka import admin
from ringback.kafka.producer import AckedProducer
from tests.sources.test_gateway_endpoints import CALLER, LAKE_RC, PUBLIC, SECRETS, Served, Topics
from tests.support import webhooks as wh

pytestmark = pytest.mark.integration

ACCOUNT_RC_TOKEN = "account-wide-ringcentral-token"
LAKE_TOKEN = SECRETS["GW_RC_TOKEN"]


@pytest.fixture(scope="module")
def env(kafka_bootstrap, tmp_path_factory):
    secrets_dir = tmp_path_factory.mktemp("secrets")
    for name, value in {**SECRETS, "RINGCENTRAL_VERIFICATION_TOKEN": ACCOUNT_RC_TOKEN}.items():
        (secrets_dir / name).write_text(value + "\n")
    env = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        ringback_namespace=f"t{uuid.uuid4().hex[:10]}",
        ringback_partitions=4,
        ringback_secrets_dir=secrets_dir,
        ringback_public_url=PUBLIC,
    )
    admin.ensure_topics(env)
    return env


@pytest.fixture(scope="module")
def served(env):
    s = Served(env, AckedProducer(env.kafka_bootstrap_servers, timeout_s=5))
    yield s
    s.close()


@pytest.fixture(scope="module")
def topic(env) -> Topics:
    return Topics(env)


def session(name: str, caller: str = CALLER) -> tuple[str, list[dict]]:
    """A session of tests/vendor/ringcentral/ with a session id of its own, on Lakeside's number."""
    raw = (wh.VENDOR / "ringcentral" / f"{name}.json").read_text()
    old = json.loads(raw)[0]["body"]["telephonySessionId"]
    new = "s-" + uuid.uuid4().hex
    raw = raw.replace(old[2:], new[2:]).replace("+14155550123", caller).replace("+16175550142", LAKE_RC)
    return new, json.loads(raw)


def ignored(reason: str) -> float:
    return REGISTRY.get_sample_value("ringback_ringcentral_ignored_total", {"reason": reason}) or 0.0


def test_sessions_out_of_order_and_redelivered_give_one_event_per_outcome(served, topic):
    rng = random.Random(7)
    expected = {}
    for name, outcome in [
        ("inbound_ivr_ring_group_answered", "answered"),
        ("inbound_ivr_ring_group_missed", "missed"),
        ("inbound_voicemail", "voicemail"),
    ]:
        sid, notes = session(name, caller=f"+1415555{rng.randrange(1000, 9999)}")
        for note in rng.sample(notes, len(notes)) + notes:
            status, _, body = served.post(wh.ringcentral(note, LAKE_TOKEN))
            assert status == 200, body
        expected[sid] = outcome
    events = [e for _, e in topic.read("call") if e["provider_call_id"] in expected]
    outcomes = {(e["provider_call_id"], e["outcome"].lower()) for e in events}
    # the voicemail session also says missed (the party is flagged missedCall): the worker
    # keeps the voicemail; the answered one holds no miss at all
    assert outcomes == {(sid, o) for sid, o in expected.items()} | {
        (sid, "missed") for sid, o in expected.items() if o == "voicemail"
    }
    assert all(e["signal"] == "leg" and e["leg_id"] and e["practice_id"] == "lakeside" for e in events)
    # redelivered notifications repeat event ids only
    assert len({e["event_id"] for e in events}) == len(outcomes)


def test_the_callers_own_outbound_party_is_no_longer_an_unknown_number(served, topic):
    sid, notes = session("inbound_ivr_ring_group_missed")
    first = notes[0]
    first["body"]["parties"][0].update(status={"code": "Disconnected"}, missedCall=True)
    status, _, body = served.post(wh.ringcentral(first, LAKE_TOKEN))
    assert status == 200, body
    [event] = [e for _, e in topic.read("call") if e["provider_call_id"] == sid]
    assert (event["outcome"], event["caller"], event["called"]) == ("MISSED", CALLER, LAKE_RC)


def test_internal_calls_are_acknowledged_counted_and_not_stored(served, topic):
    _, notes = session("internal_call")
    before, counted = topic.counts(), ignored("internal_call")
    for note in notes:
        # extension numbers only (11101 / 11104): no practice number, the account-wide token vouches
        party = note["body"]["parties"][0]
        token = LAKE_TOKEN if LAKE_RC in json.dumps(party) else ACCOUNT_RC_TOKEN
        status, _, body = served.post(wh.ringcentral(note, token))
        assert status == 200, body
    assert topic.counts() == before
    assert ignored("internal_call") == counted + len(notes)


def test_authentic_but_unusable_is_200_and_dead_lettered(served, topic):
    _, notes = session("inbound_ivr_ring_group_missed")
    no_session = json.loads(json.dumps(notes[-2]))
    del no_session["body"]["telephonySessionId"]
    anonymous = json.loads(json.dumps(notes[-2]))
    anonymous["body"]["parties"][0]["from"] = {"phoneNumber": "anonymous"}
    stranger = wh.ringcentral_session("s-" + uuid.uuid4().hex, CALLER, "+13125550177", "VoiceMail")
    cases = [
        (wh.ringcentral(no_session, LAKE_TOKEN), "telephonySessionId", "lakeside"),
        (wh.ringcentral(anonymous, LAKE_TOKEN), "from.phoneNumber", "lakeside"),
        # no practice owns a number of it; the account-wide token vouches for it
        (wh.ringcentral(stranger, ACCOUNT_RC_TOKEN), "no practice owns", None),
        (wh.Webhook(wh.RINGCENTRAL, b"not json", {"Verification-Token": ACCOUNT_RC_TOKEN}), "no practice", None),
    ]
    calls_before = topic.counts()["call"]
    for hook, reason, practice in cases:
        status, _, body = served.post(hook)
        assert status == 200, body
        letters = [r for _, r in topic.read("dead") if r["raw"] == hook.body]
        assert len(letters) == 1, reason
        assert letters[0]["source"] == "ringcentral" and reason in letters[0]["reason"]
        assert letters[0]["practice_id"] == practice
    assert topic.counts()["call"] == calls_before


def test_forged_stays_403_and_stores_nothing(served, topic):
    _, notes = session("inbound_ivr_ring_group_missed")
    before = topic.counts()
    for token in ("forged-token", ACCOUNT_RC_TOKEN, None):  # Lakeside has a token of its own
        status, _, _ = served.post(wh.ringcentral(notes[-2], token))
        assert status == 403
    internal = session("internal_call")[1][1]  # extension numbers only
    assert served.post(wh.ringcentral(internal, "forged-token"))[0] == 403
    assert topic.counts() == before
