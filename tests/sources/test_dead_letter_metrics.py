"""The CDR poller and the EHR sync/import count every dead letter they write in
`ringback_dead_letters_total{source}` (the counter every process shares), with a
bounded `source` label and only once the broker acknowledged the record. No broker:
the recording producer of the CDR tests stands in for AckedProducer."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from ringback.sources.ehr import fhir
from ringback.sources.ehr.publisher import EhrPublisher, dead_letter_label
from tests.sources.cdr.harness import append, drain, started_on_empty_file
from tests.sources.cdr.master_csv import line
from tests.sources.ehr.test_fhir_client import make_sync
from tests.sources.ehr.test_fhir_mapping import hl7
from tests.sources.recording_producer import RecordingProducer

NAME = "ringback_dead_letters_total"


def counted(source: str) -> float:
    return REGISTRY.get_sample_value(NAME, {"source": source}) or 0.0


def dead_records(producer: RecordingProducer) -> list[dict]:
    return [codec.decode("dead_letter", v) for _, v, _ in producer.records("dead-letters")]


# ---------------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "source, label",
    [
        ("fhir:Patient", "fhir:Patient"),
        ("fhir:Appointment", "fhir:Appointment"),
        ("fhir:Flag", "fhir:Flag"),
        ("fhir-ndjson:Patient", "fhir-ndjson:Patient"),
        ("fhir-ndjson:ndjson", "fhir-ndjson:ndjson"),
        ("fhir:Observation", "ehr.other"),  # not a type we read: never a label of its own
        ("fhir:Patient/123", "ehr.other"),  # an id would make the label unbounded
        ("+14155550161", "ehr.other"),  # nor a phone number
        ("", "ehr.other"),
    ],
)
def test_ehr_dead_letter_label_is_bounded(source, label):
    assert dead_letter_label(source) == label


# ---------------------------------------------------------------------------------- CDR
async def test_cdr_dead_letters_are_counted_once_acknowledged(tmp_path):
    path, producer, poller = await started_on_empty_file(tmp_path)
    before = counted("cdr")

    append(path, line(uniqueid="ok.1") + b"\n", b"garbage,line\n", b"not,a,cdr,either\n")
    producer.refuse = lambda topic, key, value: topic.endswith(".dead-letters") and b"either" in value
    with pytest.raises(BrokerUnavailable):
        await poller.poll_once()  # one dead letter refused: the batch is retried
    assert counted("cdr") - before == 1  # the acknowledged one only
    producer.refuse = lambda topic, key, value: False
    await drain(poller)
    dead = dead_records(producer)
    assert sorted(d["raw"] for d in dead) == [b"garbage,line", b"not,a,cdr,either"]
    assert all(d["source"] == "cdr" for d in dead)
    assert counted("cdr") - before == 2  # each exactly once: the retry sends only the refused one
    assert producer.event_ids() == ["cdr:ok.1:NO_ANSWER"]


async def test_cdr_lines_that_are_skipped_or_events_are_not_dead_letters(tmp_path):
    path, producer, poller = await started_on_empty_file(tmp_path)
    before = counted("cdr")
    append(path, line(uniqueid="ok.2") + b"\n", line(src="201", clid="") + b"\n", b"\n")
    await drain(poller)
    assert producer.event_ids() == ["cdr:ok.2:NO_ANSWER"]
    assert counted("cdr") == before


# ---------------------------------------------------------------------------------- EHR
async def test_ehr_rejections_are_counted_by_source(tmp_path):
    bulk = tmp_path / "Appointment.000.ndjson"
    bulk.write_text(
        "\n".join(
            [
                "{not json",
                json.dumps({**hl7("Appointment-example"), "id": "bad-start", "start": "next tuesday"}),
                json.dumps(
                    {
                        "resourceType": "Patient",
                        "id": "bad-phones",
                        "active": True,
                        "telecom": [{"system": "phone", "value": "12"}],
                    }
                ),
                json.dumps({"resourceType": "Practitioner", "id": "skipped"}),
            ]
        )
        + "\n"
    )
    sources = ("fhir-ndjson:ndjson", "fhir-ndjson:Appointment", "fhir-ndjson:Patient")
    before = {s: counted(s) for s in sources}
    producer = RecordingProducer()
    report = await fhir.import_ndjson(make_sync(tmp_path, producer, "oak-clinic", "US"), [bulk])
    assert report.dead_letters == 3
    dead = dead_records(producer)
    assert sorted(d["source"] for d in dead) == sorted(sources)
    assert {s: counted(s) - before[s] for s in sources} == {s: 1 for s in sources}


async def test_an_ehr_dead_letter_the_broker_refused_is_not_counted(tmp_path):
    producer = RecordingProducer()
    producer.refuse = lambda topic, key, value: topic.endswith(".dead-letters")
    publisher = EhrPublisher(make_sync(tmp_path, producer).env, producer, "oak-clinic")
    before = counted("fhir:Flag")
    with pytest.raises(BrokerUnavailable):
        await publisher.dead_letter("fhir:Flag", "Flag/x: why", b"{}", 1)
    assert counted("fhir:Flag") == before
    producer.refuse = lambda topic, key, value: False
    await publisher.dead_letter("fhir:Flag", "Flag/x: why", b"{}", 1)
    assert counted("fhir:Flag") - before == 1
