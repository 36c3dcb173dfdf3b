"""Faust codecs ``avro_<name>`` over the codec."""

from __future__ import annotations

import faust
import pytest
from faust.serializers import codecs as faust_codecs

from ringback.schemas import codec
from ringback.schemas.codec import SchemaValidationError, UnknownSchemaError
from ringback.schemas.faust_codec import AvroFaustCodec, register_faust_codecs
from tests.schemas.samples import RECORDS, T0, expected_after_round_trip


def test_faust_codecs():
    registered = register_faust_codecs()
    assert set(registered) == {f"avro_{n}" for n in codec.SCHEMA_NAMES}
    rec = RECORDS["call_event"][0]
    data = faust_codecs.dumps("avro_call_event", rec)
    assert data == codec.encode("call_event", rec)
    assert faust_codecs.loads("avro_call_event", data) == expected_after_round_trip("call_event", rec)
    c = faust_codecs.get_codec("avro_action_command")
    assert isinstance(c, AvroFaustCodec) and c.schema_name == "action_command"
    # chaining clones the codec with its kwargs (faust: type(self)(children=..., **kwargs))
    chained = c | faust_codecs.get_codec("binary")
    rec = RECORDS["action_command"][0]
    assert chained.loads(chained.dumps(rec)) == expected_after_round_trip("action_command", rec)
    with pytest.raises(SchemaValidationError):
        faust_codecs.dumps("avro_call_event", {"caller": None})
    with pytest.raises(UnknownSchemaError):
        AvroFaustCodec("no_such_schema")


def test_faust_record_values_are_encoded():
    class Flag(faust.Record, serializer="avro_flag"):
        practice_id: str
        flag_id: str
        patient_id: str
        code: str
        status: str
        updated_at: int

    register_faust_codecs(["flag"])
    f = Flag(
        practice_id="p",
        flag_id="Flag/1",
        patient_id="Patient/1",
        code="callback-requested",
        status="active",
        updated_at=T0,
    )
    out = codec.decode("flag", f.dumps())
    assert out["code"] == "callback-requested" and out["callback_requested"] is False
