"""The codec: round trips, single-object framing, decode errors, records of older schema versions."""

from __future__ import annotations

import enum
import io
import shutil
from datetime import UTC
from types import MappingProxyType

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringback.schemas import codec
from ringback.schemas.codec import AvroCodec, SchemaDecodeError, SchemaValidationError, UnknownSchemaError
from tests.schemas.samples import (
    CASES,
    RECORDS,
    SCHEMA_DIR,
    add_optional_field,
    evolved_dir,
    expected_after_round_trip,
    widen_int_to_long,
)

# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name,i", CASES)
def test_round_trip_realistic_records(name, i):
    record = RECORDS[name][i]
    data = codec.encode(name, record)
    assert isinstance(data, bytes)
    decoded = codec.decode(name, data)
    assert decoded == expected_after_round_trip(name, record)
    for f in codec.schema(name)["fields"]:  # timestamps come back as plain int ms
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if any(isinstance(t, dict) and t.get("logicalType") == "timestamp-millis" for t in types):
            assert decoded[f["name"]] is None or type(decoded[f["name"]]) is int
    # the decoded form encodes to the same bytes
    assert codec.encode(name, decoded) == data


@pytest.mark.parametrize("name,i", CASES)
def test_body_is_plain_avro_and_matches_fastavro(name, i):
    record = RECORDS[name][i]
    data = codec.encode(name, record)
    raw = codec.schema(name)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(raw), record)
    assert data[10:] == buf.getvalue()
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(raw)) is not None


def test_aware_datetimes_become_utc_millis():
    rec = dict(RECORDS["call_event"][2])
    out = codec.decode("call_event", codec.encode("call_event", rec))
    assert out["occurred_at"] == 1_732_640_703_250
    assert out["received_at"] == 1_732_640_703_900  # 12:05:03.9 at UTC-5 = 17:05:03.9Z


def test_enums_come_back_as_plain_strings():
    out = codec.decode("action_command", codec.encode("action_command", RECORDS["action_command"][1]))
    assert type(out["kind"]) is str and out["kind"] == "CREATE_TASK"
    assert type(out["priority"]) is str and out["priority"] == "URGENT"


def test_str_enum_members_and_mappings_are_accepted():
    class Kind(enum.StrEnum):
        SEND_SMS = "SEND_SMS"

    rec = dict(RECORDS["action_command"][0], kind=Kind.SEND_SMS)
    assert codec.decode("action_command", codec.encode("action_command", rec))["kind"] == "SEND_SMS"
    proxy = MappingProxyType(RECORDS["patient"][0])
    assert codec.decode("patient", codec.encode("patient", proxy))["phone"] == "+14155550123"


def test_extra_keys_are_ignored():
    rec = dict(RECORDS["patient"][1], __faust={"ns": "x"}, unknown="ignored")
    assert "unknown" not in codec.decode("patient", codec.encode("patient", rec))


# --------------------------------------------------------------------------- framing


def crc64_avro(data: bytes) -> int:
    """The Avro specification's reference CRC-64-AVRO (Rabin) fingerprint."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_crc64_reference_vector():
    # Avro's test vector: the fingerprint of the schema "null" is 7195948357588979594
    assert crc64_avro(b'"null"') == 7195948357588979594


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_single_object_framing(name):
    data = codec.encode(name, RECORDS[name][0])
    canonical = fastavro.schema.to_parsing_canonical_form(codec.schema(name)).encode()
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == crc64_avro(canonical).to_bytes(8, "little")
    assert codec.default_codec().fingerprint(name) == data[2:10]


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc3",
        b"garbage",
        b"\xc3\x01\x00\x01\x02",
        b"\xc3\x01" + b"\xff" * 8 + b"\x02x",
        b"\x7b\x22json\x22: 1}",
        b"\x01\x00\x00\x00\x01hello",
    ],
)
def test_decode_garbage_raises_schema_decode_error(garbage):
    with pytest.raises(SchemaDecodeError):
        codec.decode("call_event", garbage)


def test_decode_errors_are_clear():
    good = codec.encode("call_event", RECORDS["call_event"][0])
    with pytest.raises(SchemaDecodeError, match="unrecognised framing"):
        codec.decode("call_event", b"xx" + good)
    with pytest.raises(SchemaDecodeError, match="unknown writer schema fingerprint"):
        codec.decode("call_event", b"\xc3\x01" + b"\x00" * 8 + good[10:])
    with pytest.raises(SchemaDecodeError, match="body does not decode"):
        codec.decode("call_event", good[:-3])
    with pytest.raises(SchemaDecodeError, match="trailing"):
        codec.decode("call_event", good + b"\x00")
    with pytest.raises(SchemaDecodeError, match="written with schema patient"):
        codec.decode("call_event", codec.encode("patient", RECORDS["patient"][0]))
    with pytest.raises(SchemaDecodeError, match="expected bytes"):
        codec.decode("call_event", "not bytes")
    assert issubclass(SchemaDecodeError, ValueError)


def test_decode_accepts_bytearray_and_memoryview():
    good = codec.encode("dead_letter", RECORDS["dead_letter"][1])
    assert codec.decode("dead_letter", bytearray(good)) == codec.decode("dead_letter", memoryview(good))
    assert type(codec.decode("dead_letter", bytearray(good))["raw"]) is bytes


def test_unknown_schema_name():
    with pytest.raises(UnknownSchemaError, match="unknown schema 'call_events'"):
        codec.encode("call_events", {})
    with pytest.raises(KeyError):
        codec.decode("nope", b"\xc3\x01")


# --------------------------------------------------------------------------- records of older schema versions


def test_old_records_read_after_a_compatible_evolution(tmp_path):
    root = evolved_dir(tmp_path, add_optional_field)
    old = AvroCodec(SCHEMA_DIR / "history" / "v1")  # a v1 producer
    new = AvroCodec(root)  # an upgraded consumer
    rec = RECORDS["call_event"][1]
    old_bytes = old.encode("call_event", rec)
    assert old_bytes[2:10] != new.fingerprint("call_event")
    out = new.decode("call_event", old_bytes)
    evolved_fields = {f["name"] for f in new.schema("call_event")["fields"]}
    expected = {k: v for k, v in expected_after_round_trip("call_event", rec).items() if k in evolved_fields}
    assert out == {**expected, "answered_by": None}
    new_bytes = new.encode("call_event", dict(rec, answered_by="machine_end_beep"))
    assert new.decode("call_event", new_bytes)["answered_by"] == "machine_end_beep"
    # without the history copy the old fingerprint is unknown: a clear error
    shutil.rmtree(root / "history")
    with pytest.raises(SchemaDecodeError, match="unknown writer schema fingerprint"):
        AvroCodec(root).decode("call_event", old_bytes)


def test_every_released_version_of_every_schema_is_read_by_todays_code():
    current = AvroCodec(SCHEMA_DIR)
    for version in ("v1", "v2"):
        released = AvroCodec(SCHEMA_DIR / "history" / version)  # a producer of that release
        for name in codec.SCHEMA_NAMES:
            fields = {f["name"] for f in released.schema(name)["fields"]}
            record = {k: v for k, v in RECORDS[name][0].items() if k in fields}
            decoded = current.decode(name, released.encode(name, record))
            expected = {k: v for k, v in expected_after_round_trip(name, record).items() if k in fields}
            assert {k: decoded[k] for k in fields} == expected, (version, name)
    # outcome changed after v2 (the response fields): a v2 record reads with their defaults
    v2 = AvroCodec(SCHEMA_DIR / "history" / "v2").encode("outcome", RECORDS["outcome"][0])
    assert v2[2:10] != current.fingerprint("outcome")
    assert current.decode("outcome", v2)["responded"] is False


def test_old_records_read_after_int_to_long_promotion(tmp_path):
    root = evolved_dir(tmp_path, widen_int_to_long)
    old_bytes = AvroCodec(SCHEMA_DIR / "history" / "v1").encode("call_event", RECORDS["call_event"][1])
    assert AvroCodec(root).decode("call_event", old_bytes)["duration_s"] == 38


# --------------------------------------------------------------------------- only ValueErrors for bad data

# Consumers dead-letter a record on ValueError; producers reject it: no other exception may escape.

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.sampled_from(["CALL", "SMS", "MISSED", "NORMAL", "SEND_SMS", "NEW_PATIENT", "INBOUND", "OPEN"]),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.datetimes(timezones=st.just(UTC)),
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(codec.SCHEMA_NAMES), data=st.data())
def test_a_mutated_record_encodes_and_reads_back_or_is_rejected(name, data):
    record = dict(data.draw(st.sampled_from(RECORDS[name])))
    fields = [f["name"] for f in codec.schema(name)["fields"]]
    for fname in data.draw(st.lists(st.sampled_from(fields), max_size=3)):
        if data.draw(st.booleans()):
            record[fname] = data.draw(_values)
        else:
            record.pop(fname, None)
    try:
        encoded = codec.encode(name, record)
    except SchemaValidationError:
        return
    assert codec.encode(name, codec.decode(name, encoded)) == encoded


@settings(max_examples=200, deadline=None, database=None)
@given(name=st.sampled_from(codec.SCHEMA_NAMES), data=st.data())
def test_corrupted_bytes_decode_or_raise_schema_decode_error(name, data):
    good = codec.encode(name, data.draw(st.sampled_from(RECORDS[name])))
    body = bytearray(good[10:])
    for _ in range(data.draw(st.integers(0, 3))):
        if body:
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    try:
        decoded = codec.decode(name, good[:10] + bytes(body[:cut]))
    except SchemaDecodeError:
        return
    assert set(decoded) == {f["name"] for f in codec.schema(name)["fields"]}
