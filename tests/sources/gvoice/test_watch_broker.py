"""`ringback gvoice watch` and `ringback gvoice import` on the real broker, reading a real IMAP
server the test starts: a missed-call e-mail becomes one call event within seconds (IDLE), an
unreadable one a dead letter, and a restart (mail delivered while it was down) reads every
message exactly once."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from ringback.schemas import codec
from tests.conftest import wait_for
from tests.sources.gvoice.broker import apply_practices, checkpoint, start_watcher, store_password
from tests.sources.gvoice.mail import VENDOR, notification
from tests.sources.topic_records import read_topic

pytestmark = pytest.mark.integration


def events(bootstrap: str, ns: str) -> list[dict]:
    return [codec.decode("call_event", r["value"]) for r in read_topic(bootstrap, f"{ns}.call-events")]


def dead_letters(bootstrap: str, ns: str) -> list[dict]:
    return [codec.decode("dead_letter", r["value"]) for r in read_topic(bootstrap, f"{ns}.dead-letters")]


@pytest.fixture
def watched(processes, service_env, imap_server):
    apply_practices(processes)
    store_password(service_env)
    return imap_server


def test_mail_becomes_events_or_dead_letters_and_a_restart_reads_each_message_once(
    watched, processes, kafka_bootstrap, service_env
):
    ns = service_env["RINGBACK_NAMESPACE"]
    start_watcher(processes, watched, "gvoice", None, "--interval", "30")

    missed, _ = notification("missed-call.eml", caller="+14155550123")
    watched.deliver(missed)
    # --interval 30: an event within 10 s is IDLE's doing, not the poll's.
    wait_for(lambda: len(events(kafka_bootstrap, ns)) == 1, 10, message="the missed call's event")
    (event,) = events(kafka_bootstrap, ns)
    assert (event["event_type"], event["outcome"], event["provider"]) == ("CALL", "MISSED", "google_voice")
    assert (event["caller"], event["practice_id"], event["called"]) == ("+14155550123", "maple-family", "+13125550100")
    (record,) = read_topic(kafka_bootstrap, f"{ns}.call-events")
    assert record["key"] == b"maple-family|+14155550123"

    junk, _ = notification("not-a-notification.eml")
    watched.deliver(junk)
    wait_for(lambda: dead_letters(kafka_bootstrap, ns), 10, message="the dead letter")
    (dead,) = dead_letters(kafka_bootstrap, ns)
    assert dead["raw"] == junk and dead["source"] == "gvoice"
    wait_for(lambda: (checkpoint(kafka_bootstrap, ns) or {}).get("last_uid") == 2, 10, message="checkpoint past it")

    # SIGKILL: no goodbye. Mail arriving meanwhile is read by the next run, and nothing twice.
    processes.kill("gvoice", signal.SIGKILL)
    while_down = [notification("voicemail.eml", caller="+14155550124")[0]]
    while_down.append(notification("text-message.eml", caller="+14155550125")[0])
    watched.deliver(*while_down)
    start_watcher(processes, watched, "gvoice", None, "--interval", "30")
    wait_for(lambda: len(events(kafka_bootstrap, ns)) >= 4, 20, message="the mail delivered while down")
    watched.deliver(notification("missed-call.eml", caller="+14155550126")[0])
    wait_for(lambda: len(events(kafka_bootstrap, ns)) >= 5, 20, message="the mail after the restart")
    got = events(kafka_bootstrap, ns)
    assert Counter(e["event_id"] for e in got).most_common(1)[0][1] == 1, "an event was produced twice"
    # Partitions are read one after the other: order holds per caller (a transcript before its call).
    assert [(e["caller"], e["event_type"]) for e in sorted(got, key=lambda e: e["caller"])][1:] == [
        ("+14155550124", "TRANSCRIPTION"),
        ("+14155550124", "CALL"),
        ("+14155550125", "SMS"),
        ("+14155550126", "CALL"),
    ]
    assert len(dead_letters(kafka_bootstrap, ns)) == 1
    assert checkpoint(kafka_bootstrap, ns)["last_uid"] == 5


def test_the_audit_log_import_twice_publishes_the_same_events(watched, processes, kafka_bootstrap, service_env):
    ns = service_env["RINGBACK_NAMESPACE"]
    csv = VENDOR / "voice-audit-log.csv"
    first = processes.run("gvoice", "import", str(csv), "--practice", "maple-family")
    assert first.returncode == 0, first.stderr
    assert '"event_missed": 1' in first.stdout and '"dead_letter": 1' in first.stdout
    ids = [e["event_id"] for e in events(kafka_bootstrap, ns)]
    assert len(ids) == 4
    again = processes.run("gvoice", "import", str(csv), "--practice", "maple-family")
    assert again.returncode == 0, again.stderr
    assert sorted(e["event_id"] for e in events(kafka_bootstrap, ns)) == sorted(ids * 2)
    refused = processes.run("gvoice", "import", str(VENDOR / "missed-call.eml"), "--practice", "maple-family")
    assert refused.returncode != 0 and "not a Google Voice audit-log export" in refused.stderr
