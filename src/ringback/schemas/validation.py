"""Record validation with messages that name the field and never echo PHI.

fastavro decides whether a record matches its schema; this module only explains a
mismatch, one ``<schema>.<field>: expected ..., got ...`` per bad field (fastavro
stops at the first one, and its own messages repeat the value: phone numbers,
names, message text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastavro.schema import UnknownType
from fastavro.validation import ValidationError as FastavroValidationError
from fastavro.validation import validate as fastavro_validate

__all__ = ["RecordValidator", "SchemaValidationError"]


class SchemaValidationError(ValueError):
    """A record does not match its schema; the message names the field path."""


class RecordValidator:
    """Validates records of one schema: ``validator(record)`` returns the record as a
    mapping (a faust ``Record`` becomes its dict) or raises :class:`SchemaValidationError`."""

    def __init__(self, name: str, raw: Mapping[str, Any], parsed: Any) -> None:
        self.name, self.raw, self.parsed = name, raw, parsed
        self.timestamp_fields = tuple(
            f["name"]
            for f in raw["fields"]
            if any(
                isinstance(b, dict) and str(b.get("logicalType", "")).startswith("timestamp-")
                for b in (f["type"] if isinstance(f["type"], list) else [f["type"]])
            )
        )

    def __call__(self, record: Any) -> Mapping[str, Any]:
        if not isinstance(record, Mapping):
            to_representation = getattr(record, "to_representation", None)  # a faust Record
            if to_representation is None:
                raise SchemaValidationError(f"{self.name}: expected a record (mapping), got {_describe_value(record)}")
            record = to_representation()
        for fname in self.timestamp_fields:
            value = record.get(fname)
            if isinstance(value, datetime) and value.tzinfo is None:  # fastavro would guess the zone
                raise SchemaValidationError(
                    f"{self.name}.{fname}: naive datetime {value.isoformat()}; "
                    f"pass int epoch ms or a timezone-aware datetime"
                )
        # raise_errors=False: several times faster on unions (no exception per rejected branch).
        if not fastavro_validate(record, self.parsed, raise_errors=False):
            raise SchemaValidationError(_explain(self.name, self.raw, self.parsed, record))
        return record


def _explain(name: str, raw: Mapping[str, Any], parsed: Any, record: Mapping[str, Any]) -> str:
    parts = []
    for field in raw["fields"]:
        fname, ftype = field["name"], field["type"]
        if fname not in record:
            if "default" not in field:
                parts.append(f"{name}.{fname}: missing required field (expected {_describe_type(ftype)})")
            continue
        value = record[fname]
        if _valid(value, ftype):
            continue
        inner = _container_problem(ftype, value)
        if inner is not None:
            parts.append(f"{name}.{fname}{inner[0]}: {inner[1]}")
        else:
            parts.append(f"{name}.{fname}: expected {_describe_type(ftype)}, got {_describe_value(value, ftype)}")
    if not parts:  # not found field by field: fastavro's account, without the value
        try:
            fastavro_validate(record, parsed, raise_errors=True)
        except FastavroValidationError as e:
            for err in e.errors:
                fname = str(getattr(err, "field", "") or "").rsplit(".", 1)[-1] or "?"
                got = _describe_value(err.datum, err.schema)
                parts.append(f"{name}.{fname}: expected {_describe_type(err.schema)}, got {got}")
    return "; ".join(parts) or f"{name}: record does not match the schema"


def _valid(value: Any, avro_type: Any) -> bool:
    try:
        return bool(fastavro_validate(value, avro_type, raise_errors=False))
    except UnknownType:  # a named type defined in another field: judged there
        return True


def _container_problem(avro_type: Any, value: Any) -> tuple[str, str] | None:
    """(path suffix, problem) of the first bad element of a map or array value."""
    if isinstance(avro_type, list):  # a nullable container: its container branch
        avro_type = next((b for b in avro_type if isinstance(b, dict) and b.get("type") in ("map", "array")), None)
    if not isinstance(avro_type, dict):
        return None
    if avro_type.get("type") == "map" and isinstance(value, Mapping):
        values = avro_type["values"]
        for k, v in value.items():
            if not isinstance(k, str):
                return "", f"map keys must be strings, got {_describe_value(k)}"
            if not _valid(v, values):
                return f"[{k!r}]", f"expected {_describe_type(values)}, got {_describe_value(v, values)}"
    if avro_type.get("type") == "array" and isinstance(value, (list, tuple)):
        items = avro_type["items"]
        for i, v in enumerate(value):
            if not _valid(v, items):
                return f"[{i}]", f"expected {_describe_type(items)}, got {_describe_value(v, items)}"
    return None


def _describe_type(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " | ".join(_describe_type(x) for x in avro_type)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical and logical.startswith("timestamp-"):
            unit = "ms" if logical.endswith("millis") else "us"
            return f"{logical} (int epoch {unit} or aware datetime)"
        if logical:
            return f"{logical} ({_describe_type(avro_type.get('type'))})"
        kind = avro_type.get("type")
        short_name = str(avro_type.get("name", "")).rsplit(".", 1)[-1]
        if kind == "enum":
            return f"enum {short_name} {{{', '.join(avro_type.get('symbols', []))}}}"
        if kind == "array":
            return f"array<{_describe_type(avro_type.get('items'))}>"
        if kind == "map":
            return f"map<{_describe_type(avro_type.get('values'))}>"
        if kind in ("record", "fixed"):
            return f"{kind} {short_name}"
        return _describe_type(kind)
    return str(avro_type)


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


def _has_enum(avro_type: Any) -> bool:
    if isinstance(avro_type, list):
        return any(_has_enum(b) for b in avro_type)
    return isinstance(avro_type, dict) and avro_type.get("type") == "enum"


def _describe_value(value: Any, expected: Any = None) -> str:
    """A value for an error message without PHI: strings (phone numbers, names, message
    text) and long numbers are not echoed; short symbol-like strings are, for enum fields."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**9:
        return f"an int of {len(str(abs(value)))} digits"  # could be a phone number
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, datetime)):
        return f"{value!r} ({type(value).__name__})"
    if isinstance(value, str):
        if _has_enum(expected) and _SYMBOL.fullmatch(value):
            return f"{value!r} (str)"
        return f"a str of {len(value)} chars"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} of {len(value)} bytes"
    if isinstance(value, (Mapping, list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"
