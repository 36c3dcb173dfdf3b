"""The mailbox watcher against a real IMAP server (dovecot, started by the test), producing to
a RecordingProducer: new mail read once, the checkpoint after the acknowledgement, IDLE,
restarts, a renumbered folder, dead letters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.dev.imap_server import PASSWORD, USER
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from ringback.sources.gvoice import watcher as gv
from ringback.sources.gvoice.checkpoints import Checkpoint
from ringback.sources.gvoice.mailbox import Mailbox, MailboxConfig
from tests.conftest import wait_for
from tests.sources.cdr.master_csv import DIRECTORY
from tests.sources.gvoice.mail import notification
from tests.sources.recording_producer import RecordingProducer

ENV = Settings(ringback_namespace="unit", kafka_bootstrap_servers="127.0.0.1:1")
CALLER = "+14155550123"


def config(server) -> MailboxConfig:
    return MailboxConfig(host=server.host, port=server.port, user=USER, password=PASSWORD, ca_file=server.ca_file)


def watcher(server, producer, checkpoint=None, directory: PracticeDirectory = DIRECTORY, **kw) -> gv.GVoiceWatcher:
    kw.setdefault("practice_id", "maple-family")
    return gv.GVoiceWatcher(
        ENV,
        directory,
        producer,
        config(server),
        clock=ManualClock(1_772_464_600.0),
        load=lambda env, watcher_id, folder: checkpoint,
        **kw,
    )


def checkpoints(producer: RecordingProducer) -> list[Checkpoint]:
    return [Checkpoint.decode(v) for _, v, _ in producer.records("gvoice-checkpoints")]


def events(producer: RecordingProducer) -> list[dict]:
    return [codec.decode("call_event", v) for _, v, _ in producer.records("call-events")]


async def started(w: gv.GVoiceWatcher) -> gv.GVoiceWatcher:
    await w.start()
    await w.connect()
    return w


def test_first_start_reads_only_new_mail_then_each_message_once(imap_server):
    old, _ = notification("missed-call.eml", caller="+14155550111")
    imap_server.deliver(old)
    producer = RecordingProducer()

    async def scenario():
        w = await started(watcher(imap_server, producer))
        assert await w.poll_once() == 0  # mail that was there before the first start is not read
        imap_server.deliver(notification("missed-call.eml", caller=CALLER)[0])
        assert await w.poll_once() == 1
        assert await w.poll_once() == 0
        w.disconnect()

    asyncio.run(scenario())
    (event,) = events(producer)
    assert (event["caller"], event["called"], event["practice_id"]) == (CALLER, "+13125550100", "maple-family")
    (key, _, _) = producer.records("call-events")[0]
    assert key == f"maple-family|{CALLER}".encode()
    first, last = checkpoints(producer)
    assert (first.last_uid, last.last_uid) == (1, 2)
    assert last.last_date_ms > 0 and last.uidvalidity == first.uidvalidity


def test_from_beginning_reads_what_is_in_the_folder(imap_server):
    imap_server.deliver(*(notification("missed-call.eml", caller=f"+1415555012{i}")[0] for i in range(3)))
    producer = RecordingProducer()

    async def scenario():
        w = await started(watcher(imap_server, producer, from_beginning=True))
        assert await w.poll_once() == 3
        w.disconnect()

    asyncio.run(scenario())
    assert [e["caller"] for e in events(producer)] == [f"+1415555012{i}" for i in range(3)]


def test_a_restart_resumes_after_the_checkpoint(imap_server):
    imap_server.deliver(*(notification("missed-call.eml", caller=f"+1415555013{i}")[0] for i in range(3)))
    producer = RecordingProducer()

    async def scenario(cp):
        w = await started(watcher(imap_server, producer, checkpoint=cp))
        await w.poll_once()
        w.disconnect()

    uidvalidity = imap_server.client().folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    asyncio.run(scenario(Checkpoint("maple-family", "INBOX", uidvalidity, 2, 0, 0)))
    assert [e["caller"] for e in events(producer)] == ["+14155550132"]


def test_nothing_is_checkpointed_past_a_message_the_broker_did_not_acknowledge(imap_server):
    producer = RecordingProducer()
    producer.refuse = lambda topic, key, value: topic.endswith("call-events")

    async def scenario():
        w = await started(watcher(imap_server, producer))
        imap_server.deliver(notification("missed-call.eml", caller=CALLER)[0])
        with pytest.raises(BrokerUnavailable):
            await w.poll_once()
        assert w.checkpoint is not None and w.checkpoint.last_uid == 0
        producer.refuse = lambda topic, key, value: False
        assert await w.poll_once() == 1
        w.disconnect()

    asyncio.run(scenario())
    assert len(events(producer)) == 1
    assert checkpoints(producer)[-1].last_uid == 1


def test_an_unreadable_message_is_a_dead_letter_with_the_raw_message_and_reading_goes_on(imap_server):
    producer = RecordingProducer()
    junk, _ = notification("not-a-notification.eml")

    async def scenario():
        w = await started(watcher(imap_server, producer))
        imap_server.deliver(junk, notification("voicemail.eml", caller=CALLER)[0])
        assert await w.poll_once() == 2
        w.disconnect()

    asyncio.run(scenario())
    ((_, value, _),) = producer.records("dead-letters")
    dead = codec.decode("dead_letter", value)
    assert dead["source"] == "gvoice" and "UID 1: subject is not" in dead["reason"]
    assert dead["raw"] == junk and dead["content_type"] == "message/rfc822"
    assert dead["practice_id"] == "maple-family"
    assert [(e["event_type"], e["outcome"]) for e in events(producer)] == [
        ("TRANSCRIPTION", "VOICEMAIL"),
        ("CALL", "VOICEMAIL"),
    ]
    assert checkpoints(producer)[-1].last_uid == 2


def test_the_practice_comes_from_the_google_voice_number_when_the_message_names_one(imap_server):
    producer = RecordingProducer()
    text, _ = notification("text-message.eml", caller=CALLER)
    text = text.replace(b"<14155550100.", b"<13125550101.")  # sent to maple-family's second number

    async def scenario():
        w = await started(watcher(imap_server, producer, practice_id=None))
        imap_server.deliver(text, notification("missed-call.eml", caller=CALLER)[0])
        await w.poll_once()
        w.disconnect()

    asyncio.run(scenario())
    (sms,) = events(producer)
    assert (sms["event_type"], sms["practice_id"], sms["called"]) == ("SMS", "maple-family", "+13125550101")
    ((_, value, _),) = producer.records("dead-letters")  # the missed call names no practice number
    assert "no number of a practice" in codec.decode("dead_letter", value)["reason"]


def test_a_renumbered_folder_is_read_again_from_the_last_message_read_and_logged(imap_server, caplog):
    imap_server.deliver(*(notification("missed-call.eml", caller=f"+1415555014{i}")[0] for i in range(2)))
    producer = RecordingProducer()
    read_at = []

    async def first_run():
        w = await started(watcher(imap_server, producer, from_beginning=True))
        await w.poll_once()
        read_at.append(w.checkpoint)
        w.disconnect()

    asyncio.run(first_run())
    cp = read_at[0]
    imap_server.deliver(notification("missed-call.eml", caller="+14155550149")[0])
    # As if the server had renumbered the folder: the checkpoint's UIDVALIDITY no longer matches.
    renumbered = Checkpoint(cp.watcher_id, cp.folder, cp.uidvalidity + 1, 99, cp.last_date_ms, cp.updated_at)
    second = RecordingProducer()

    async def second_run():
        w = await started(watcher(imap_server, second, checkpoint=renumbered))
        assert await w.poll_once() == 0
        w.disconnect()

    asyncio.run(second_run())
    again, new = events(second)[:-1], events(second)[-1]
    # The new message is read once; the last message read before (and any the server received
    # in the same second: INTERNALDATE has seconds) is read again with the same event id, which
    # the worker drops.
    assert new["caller"] == "+14155550149"
    assert "+14155550141" in [e["caller"] for e in again]
    assert {e["event_id"] for e in again} <= {e["event_id"] for e in events(producer)}
    assert checkpoints(second)[-1].uidvalidity == cp.uidvalidity and checkpoints(second)[-1].last_uid == 3
    assert "renumbered" in caplog.text


def test_idle_wakes_the_watcher_when_mail_arrives(imap_server):
    mailbox = Mailbox(config(imap_server))
    mailbox.open()
    assert mailbox.idle_supported
    stop = threading.Event()
    woke = threading.Event()

    def wait():
        mailbox.wait(600, stop)
        woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        imap_server.deliver(notification("missed-call.eml", caller=CALLER)[0])
        wait_for(woke.is_set, 30, message="IDLE returned on the new message")
    finally:
        stop.set()
        thread.join(10)
        mailbox.close()


def test_the_run_loop_reconnects_after_the_server_went_away(imap_server):
    producer = RecordingProducer()
    w = watcher(imap_server, producer, interval=0.5)

    async def scenario():
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(w.run(stop, ready=ready.set))
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.to_thread(imap_server.restart)
        imap_server.deliver(notification("missed-call.eml", caller=CALLER)[0])
        for _ in range(300):
            if producer.records("call-events"):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert [e["caller"] for e in events(producer)] == [CALLER]


def test_the_run_loop_starts_over_when_the_broker_refused_the_first_checkpoint(imap_server):
    producer = RecordingProducer()
    refusals = []

    def refuse(topic, key, value):
        if topic.endswith("gvoice-checkpoints") and len(refusals) < 2:
            refusals.append(topic)
            return True
        return False

    producer.refuse = refuse
    w = watcher(imap_server, producer, interval=0.5)

    async def scenario():
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(w.run(stop, ready=ready.set))
        await asyncio.wait_for(ready.wait(), 30)
        imap_server.deliver(notification("missed-call.eml", caller=CALLER)[0])
        for _ in range(300):
            if producer.records("call-events"):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert len(refusals) == 2
    assert [e["caller"] for e in events(producer)] == [CALLER]
    assert checkpoints(producer)[-1].last_uid == 1
