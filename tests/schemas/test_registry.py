"""The Confluent wire format, with confluent-kafka's in-memory registry (``mock://`` URLs)."""

from __future__ import annotations

import io
import socket

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from ringback.schemas import codec
from ringback.schemas.codec import AvroCodec, SchemaDecodeError, SchemaRegistryError, SchemaValidationError
from ringback.schemas.registry import client_for
from tests.schemas.samples import RECORDS, SCHEMA_DIR, expected_after_round_trip


@pytest.fixture
def registry(request) -> SchemaRegistryClient:
    return client_for(f"mock://{request.node.name}")


def test_confluent_framing_with_a_registry(registry):
    producer = AvroCodec(registry=registry)
    rec = RECORDS["call_event"][0]
    data = producer.encode("call_event", rec, topic="ringback.call-events")
    schema_id = int.from_bytes(data[1:5], "big")
    assert data[:1] == b"\x00"
    assert registry.get_latest_version("ringback.call-events-value").schema_id == schema_id
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(codec.schema("call_event")), rec)
    assert data[5:] == body.getvalue()
    assert producer.encode("call_event", rec, topic="ringback.call-events") == data
    assert producer.decode("call_event", data) == expected_after_round_trip("call_event", rec)
    # without a topic the subject is <name>-value
    producer.encode("outcome", RECORDS["outcome"][0])
    assert sorted(registry.get_subjects()) == ["outcome-value", "ringback.call-events-value"]
    # another process with the same registry fetches the writer schema by id
    consumer = AvroCodec(registry=registry)
    assert consumer.decode("call_event", data) == expected_after_round_trip("call_event", rec)
    # both framings decode, whatever the configuration
    single = AvroCodec().encode("call_event", rec)
    assert single[:2] == b"\xc3\x01"
    assert consumer.decode("call_event", single) == consumer.decode("call_event", data)


def test_a_record_of_an_older_registered_schema_reads_with_the_current_one(registry):
    # history/v1's outcome has no record_type/action_* fields: the reader's defaults fill them in
    old = AvroCodec(SCHEMA_DIR / "history" / "v1", registry=registry).encode("outcome", RECORDS["outcome"][0])
    out = AvroCodec(registry=registry).decode("outcome", old)
    assert out == expected_after_round_trip("outcome", RECORDS["outcome"][0])
    assert out["record_type"] == "CASE" and out["action_id"] is None
    assert type(out["at"]) is int


def test_confluent_framing_errors(registry):
    data = AvroCodec(registry=registry).encode("patient", RECORDS["patient"][0])
    with pytest.raises(SchemaRegistryError, match="no Schema Registry is configured"):
        AvroCodec().decode("patient", data)
    with pytest.raises(SchemaDecodeError, match="schema id 99 is unknown"):
        AvroCodec(registry=registry).decode("patient", b"\x00\x00\x00\x00\x63" + data[5:])
    with pytest.raises(SchemaDecodeError, match="does not decode"):  # a Patient is no CallEvent
        AvroCodec(registry=registry).decode("call_event", data)
    with pytest.raises(SchemaDecodeError, match="truncated"):
        AvroCodec(registry=registry).decode("patient", b"\x00\x00\x01")
    with pytest.raises(SchemaValidationError, match="patient.phone"):
        AvroCodec(registry=registry).encode("patient", dict(RECORDS["patient"][0], phone=None))


def test_an_unreachable_registry_is_an_operational_error_not_bad_data():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = AvroCodec(registry=SchemaRegistryClient({"url": f"http://127.0.0.1:{port}", "max.retries": 0}))
    with pytest.raises(SchemaRegistryError, match="the Schema Registry failed"):
        down.encode("patient", RECORDS["patient"][0])
    with pytest.raises(SchemaRegistryError, match="fetching schema id 7 failed"):
        down.decode("patient", b"\x00\x00\x00\x00\x07\x00")
    assert not issubclass(SchemaRegistryError, ValueError)  # consumers must not dead-letter on it


def test_use_registry_switches_the_module_functions():
    try:
        codec.use_registry("mock://test-use-registry")
        data = codec.encode("task_update", RECORDS["task_update"][0])
        assert data[:1] == b"\x00"
        assert codec.decode("task_update", data)["action"] == "COMPLETE"
    finally:
        codec.use_registry(None)
    assert codec.encode("task_update", RECORDS["task_update"][0])[:2] == b"\xc3\x01"
