"""Backward compatibility of schema evolutions (``python -m ringback.schemas.compat``)."""

from __future__ import annotations

import copy
import json

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from ringback.schemas import codec, compat
from ringback.schemas.codec import AvroCodec, SchemaDecodeError
from tests.schemas.samples import (
    RECORDS,
    SCHEMA_DIR,
    add_optional_field,
    add_required_field,
    evolved_dir,
    int_to_string,
    remove_enum_symbol,
    widen_int_to_long,
)


def test_the_current_schemas_read_every_history_version(capsys):
    results = compat.check_all()
    assert set(results) == {f"{n} vs history/{v}" for n in codec.SCHEMA_NAMES for v in ("v1", "v2")}
    assert all(problems == [] for problems in results.values()), results
    assert compat.main([]) == 0
    count = 2 * len(codec.SCHEMA_NAMES)
    assert capsys.readouterr().out.endswith(f"{count}/{count} compatible\n")


@pytest.mark.parametrize("mutate", [add_optional_field, widen_int_to_long])
def test_compatible_changes_pass(mutate, tmp_path):
    old = codec.schema("call_event")
    new = copy.deepcopy(old)
    mutate(new)
    assert compat.check_backward(old, new) == []
    assert compat.main(["--dir", str(evolved_dir(tmp_path, mutate)), "-q"]) == 0


@pytest.mark.parametrize(
    "mutate,expected,affected",
    [
        (add_required_field, "CallEvent.carrier: new field without a default (old records do not have it)", 0),
        (remove_enum_symbol, "CallEvent.event_type: missing enum symbols: {'SMS'}", 2),  # an SMS event
        (int_to_string, "CallEvent.duration_s: missing union branch: reader union lacking writer type: INT", 1),
    ],
)
def test_incompatible_changes_fail_and_name_the_field(mutate, expected, affected, tmp_path, capsys):
    old = codec.schema("call_event")
    new = copy.deepcopy(old)
    mutate(new)
    assert compat.check_backward(old, new) == [expected]
    root = evolved_dir(tmp_path, mutate)
    assert compat.main(["--dir", str(root), "-q"]) == 1
    assert f"FAIL call_event vs history/v1\n  - {expected}\n" in capsys.readouterr().out
    # what the check protects against: records already in the topics no longer decode
    old_bytes = AvroCodec(SCHEMA_DIR / "history" / "v1").encode("call_event", RECORDS["call_event"][affected])
    with pytest.raises(SchemaDecodeError, match="body does not decode with writer schema call_event \\(v1\\)"):
        AvroCodec(root).decode("call_event", old_bytes)


def test_every_problem_is_reported():
    old = codec.schema("call_event")
    new = copy.deepcopy(old)
    add_required_field(new)
    remove_enum_symbol(new)
    assert compat.check_backward(old, new) == [
        "CallEvent.carrier: new field without a default (old records do not have it)",
        "CallEvent.event_type: missing enum symbols: {'SMS'}",
    ]


def test_more_resolution_rules():
    old = codec.schema("outcome")
    # a removed field is fine for readers
    new = copy.deepcopy(old)
    new["fields"] = [f for f in new["fields"] if f["name"] != "reason"]
    assert compat.check_backward(old, new) == []
    # a renamed enum is not, unless the old name is an alias
    new = copy.deepcopy(old)
    state = next(f for f in new["fields"] if f["name"] == "state")["type"]
    state["name"] = "OutcomeState"
    assert compat.check_backward(old, new) == ["Outcome.state: name mismatch: expected: dev.ringback.CaseState"]
    state["aliases"] = ["dev.ringback.CaseState"]
    assert compat.check_backward(old, new) == []
    # a renamed record is not either
    new = dict(copy.deepcopy(old), name="CaseOutcome")
    assert compat.check_backward(old, new) == ["CaseOutcome: record renamed from dev.ringback.Outcome without an alias"]
    # an enum default makes a removed symbol readable
    old_ce = codec.schema("call_event")
    new_ce = copy.deepcopy(old_ce)
    next(f for f in new_ce["fields"] if f["name"] == "outcome")["type"][1]["symbols"].remove("ANSWERED")
    assert compat.check_backward(old_ce, new_ce) == []
    # a new schema that does not parse
    assert compat.check_backward(old, {"type": "record", "name": "X", "fields": [{"name": "a"}]}) == [
        'new schema does not parse: Type property "None" not a valid Avro schema: '
        "Could not make an Avro Schema object from None"
    ]


def test_a_changed_logical_type_is_flagged_though_avro_resolution_accepts_it():
    old = codec.schema("outcome")
    new = copy.deepcopy(old)
    next(f for f in new["fields"] if f["name"] == "at")["type"]["logicalType"] = "timestamp-micros"
    verdict = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(new)), avro.schema.parse(json.dumps(old))
    )
    assert verdict.compatibility is SchemaCompatibilityType.compatible  # the library alone lets it through
    assert compat.check_backward(old, new) == [
        "Outcome.at: logical type changed from timestamp-millis to timestamp-micros "
        "(readable, but the values mean something else)"
    ]


def test_a_removed_schema_is_reported(tmp_path):
    root = evolved_dir(tmp_path, lambda raw: None)
    (root / "flag.avsc").unlink()
    assert compat.check_all(root)["flag vs history/v1"] == [
        "flag.avsc was removed but history/v1 has it (records may be in topics)"
    ]
