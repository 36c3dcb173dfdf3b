"""Avro codec for every ringback topic.

``encode(name, record) -> bytes`` and ``decode(name, data) -> dict``, where ``name``
is the stem of a schema file in this folder (``"call_event"``, ``"outcome"``, ...).

Values
    * Timestamps (``timestamp-millis``): ``encode`` accepts ``int`` epoch milliseconds
      or a timezone-aware :class:`datetime.datetime`; a naive datetime is rejected
      (its zone would be a guess). ``decode`` always returns plain ``int`` epoch
      milliseconds: the reader schemas have their logical types stripped, so fastavro
      never builds datetimes (timestamp-millis is a ``long`` on the wire, so this
      changes nothing in the bytes or the schema fingerprint).
    * Enums are plain ``str`` symbols both ways, unions are the bare value
      (fastavro's defaults: ``return_record_name=False``, ``return_named_type=False``).
    * Keys not in the schema are ignored on encode (e.g. faust's ``__faust``
      metadata); a missing field takes the schema default, or fails validation.

Validation
    Every record is validated before it is written;  a mismatch raises
    :class:`SchemaValidationError` naming the field, e.g.
    ``call_event.caller: expected string, got None``.

Framing (bytes layout)
    * No ``SCHEMA_REGISTRY_URL``: Avro *single-object encoding* --
      ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer
      schema's Parsing Canonical Form + Avro binary body.
    * ``SCHEMA_REGISTRY_URL`` set: Confluent wire format -- ``00`` + 4-byte
      big-endian schema id + Avro binary body; the schema is registered under the
      subject ``<topic or name>-value`` (ids are cached per process).
    ``decode`` accepts both. A single-object writer schema is looked up by
    fingerprint among the current schema and every version in ``schemas/history/``
    and resolved to the current (reader) schema, so records written before an
    evolution still read. A Confluent-framed record's writer schema is fetched from
    the registry by id (cached). Bad magic, an unknown fingerprint/id, a body that
    does not match the writer schema, or trailing bytes raise
    :class:`SchemaDecodeError`.

Faust
    ``register_faust_codecs()`` registers one codec per schema as ``avro_<name>``
    (e.g. ``value_serializer="avro_call_event"``); the class is
    :class:`AvroFaustCodec` (imported lazily, so that processes that do not run
    faust do not pay for importing it).
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError as _FastavroValidationError
from fastavro.validation import validate as _fastavro_validate

from ringback.schemas._fastpath import Mismatch as _Mismatch
from ringback.schemas._fastpath import compile_decoder as _compile_decoder
from ringback.schemas._fastpath import compile_encoder as _compile_encoder

__all__ = [
    "SCHEMA_DIR",
    "SCHEMA_NAMES",
    "SINGLE_OBJECT_MAGIC",
    "CONFLUENT_MAGIC",
    "SchemaValidationError",
    "SchemaDecodeError",
    "SchemaRegistryError",
    "UnknownSchemaError",
    "AvroCodec",
    "encode",
    "decode",
    "validate",
    "schema",
    "fingerprint",
    "subject_for",
    "set_registry",
    "default_codec",
    "AvroFaustCodec",
    "register_faust_codecs",
]

SCHEMA_DIR = Path(__file__).resolve().parent
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SO_HEADER_LEN = 10  # 2 magic + 8 fingerprint
_CF_HEADER_LEN = 5  # 1 magic + 4 schema id
REGISTRY_URL_ENV = "SCHEMA_REGISTRY_URL"


class SchemaValidationError(ValueError):
    """A record does not match its schema; the message names the field path."""


class SchemaDecodeError(ValueError):
    """Bytes cannot be decoded: bad framing, unknown writer schema, corrupt body."""


class SchemaRegistryError(RuntimeError):
    """The Schema Registry is needed but not configured, not importable or failing.

    Deliberately not a ``ValueError``: it is an operational problem, not bad data,
    so consumers should not dead-letter the record because of it.
    """


class UnknownSchemaError(KeyError):
    """No schema file with that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- schemas


def _strip_logical_types(s: Any) -> Any:
    """Copy of a schema without logicalType annotations (values decode as plain ints)."""
    if isinstance(s, list):
        return [_strip_logical_types(x) for x in s]
    if isinstance(s, dict):
        if "logicalType" in s and isinstance(s.get("type"), str):
            rest = {k: v for k, v in s.items() if k != "logicalType"}
            if set(rest) == {"type"}:
                return rest["type"]
            return rest
        out = {}
        for k, v in s.items():
            if k in ("type", "items", "values"):
                out[k] = _strip_logical_types(v)
            elif k == "fields":
                out[k] = [{**f, "type": _strip_logical_types(f["type"])} for f in v]
            else:
                out[k] = v
        return out
    return s


def _timestamp_fields(raw: Mapping[str, Any]) -> tuple[str, ...]:
    names = []
    for f in raw.get("fields", ()):
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        for b in branches:
            if isinstance(b, dict) and b.get("logicalType", "").startswith("timestamp-"):
                names.append(f["name"])
                break
    return tuple(names)


def schema_fingerprint(raw: Any) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as the 8 bytes
    single-object encoding writes (little-endian, like the Java implementation)."""
    return bytes.fromhex(_fastavro_fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))


@dataclass(frozen=True, eq=False)
class _Schema:
    name: str  # file stem, e.g. "call_event"
    version: str  # "current", "v1", ..., or "registry id N"
    raw: dict  # the JSON as in the file
    write: dict  # parsed, with logical types (accepts datetimes)
    read: dict  # parsed, logical types stripped (returns ints)
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO
    header: bytes  # single-object header: C3 01 + fingerprint
    ts_fields: tuple[str, ...]
    fields: dict  # field name -> field dict (raw)
    schema_str: str  # compact JSON, what is registered with a registry
    fast: Any  # generated encoder (record, prefix) -> bytes, or None
    fast_decode: Any  # generated decoder (data, offset) -> dict, or None

    @classmethod
    def build(cls, name: str, version: str, raw: Any) -> _Schema:
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise ValueError(f"schema {name} ({version}) is not an Avro record")
        fp = schema_fingerprint(raw)
        return cls(
            name=name,
            version=version,
            raw=raw,
            write=fastavro.parse_schema(json.loads(json.dumps(raw))),
            read=fastavro.parse_schema(_strip_logical_types(raw)),
            fingerprint=fp,
            header=SINGLE_OBJECT_MAGIC + fp,
            ts_fields=_timestamp_fields(raw),
            fields={f["name"]: f for f in raw["fields"]},
            schema_str=json.dumps(raw, separators=(",", ":")),
            fast=_compile_encoder(raw) if version == "current" else None,
            fast_decode=_compile_decoder(raw) if version == "current" else None,
        )

    @property
    def label(self) -> str:
        return f"{self.name} ({self.version})"


def _load_dir(path: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(path.glob("*.avsc")):
        try:
            out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON: {e}") from e
    return out


def _history_versions(schema_dir: Path) -> list[tuple[str, Path]]:
    """[(label, dir)] of schemas/history/v<N>, oldest first."""
    hist = schema_dir / "history"
    if not hist.is_dir():
        return []
    versions = []
    for d in hist.iterdir():
        if d.is_dir() and d.name.startswith("v") and d.name[1:].isdigit():
            versions.append((int(d.name[1:]), d.name, d))
    return [(label, d) for _, label, d in sorted(versions)]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _PlainSchema:
    """Stand-in for confluent_kafka.schema_registry.Schema when it cannot be imported
    (only used with injected registry clients)."""

    schema_str: str
    schema_type: str = "AVRO"


def _registry_schema_obj(schema_str: str) -> Any:
    try:
        from confluent_kafka.schema_registry import Schema
    except Exception:  # pragma: no cover - depends on installed extras
        return _PlainSchema(schema_str)
    return Schema(schema_str, "AVRO")


def _make_registry_client(url: str) -> Any:
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except Exception as e:
        raise SchemaRegistryError(
            f"{REGISTRY_URL_ENV} is set but the Schema Registry client cannot be "
            f"imported ({type(e).__name__}: {e}); install confluent-kafka[schemaregistry]"
        ) from e
    return SchemaRegistryClient({"url": url})


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, LookupError):
        return True
    status = getattr(exc, "http_status_code", None)
    return status == 404


# --------------------------------------------------------------------------- messages


def _describe_type(t: Any) -> str:
    if isinstance(t, list):
        return " | ".join(_describe_type(x) for x in t)
    if isinstance(t, dict):
        lt = t.get("logicalType")
        if lt and lt.startswith("timestamp-"):
            unit = "ms" if lt.endswith("millis") else "us"
            return f"{lt} (int epoch {unit} or aware datetime)"
        if lt:
            return f"{lt} ({_describe_type(t.get('type'))})"
        kind = t.get("type")
        if kind == "enum":
            short = str(t.get("name", "")).rsplit(".", 1)[-1]
            return f"enum {short} {{{', '.join(t.get('symbols', []))}}}"
        if kind == "array":
            return f"array<{_describe_type(t.get('items'))}>"
        if kind == "map":
            return f"map<{_describe_type(t.get('values'))}>"
        if kind in ("record", "fixed"):
            return f"{kind} {str(t.get('name', '')).rsplit('.', 1)[-1]}"
        return _describe_type(kind)
    return str(t)


_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


def _has_enum(t: Any) -> bool:
    if isinstance(t, list):
        return any(_has_enum(b) for b in t)
    return isinstance(t, dict) and t.get("type") == "enum"


def _describe_value(v: Any, expected: Any = None) -> str:
    """A value for an error message, without PHI: strings (phone numbers, names,
    message text) and long numbers are not echoed; short symbol-like strings are,
    for enum fields."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**9:
        return f"an int of {len(str(abs(v)))} digits"  # could be a phone number
    if v is None or isinstance(v, (bool, int, float, datetime)):
        return "None" if v is None else f"{v!r} ({type(v).__name__})"
    if isinstance(v, str):
        if _has_enum(expected) and _TOKEN.fullmatch(v):
            return f"{v!r} (str)"
        return f"a str of {len(v)} chars"
    if isinstance(v, (bytes, bytearray)):
        return f"{type(v).__name__} of {len(v)} bytes"
    if isinstance(v, (Mapping, list, tuple)):
        return f"a {type(v).__name__} of {len(v)} items"
    return f"a {type(v).__name__}"


def _valid(value: Any, t: Any) -> bool:
    try:
        return bool(_fastavro_validate(value, t, raise_errors=False))
    except Exception:  # e.g. a reference to a named type defined in another field
        return True


def _container_problem(t: Any, value: Any) -> tuple[str, str] | None:
    """(path suffix, problem) of the first bad element of a map/array value."""
    if isinstance(t, list):  # a nullable container: the container branch
        t = next((b for b in t if isinstance(b, dict) and b.get("type") in ("map", "array")), None)
    if not isinstance(t, dict):
        return None
    if t.get("type") == "map" and isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return "", f"map keys must be strings, got {_describe_value(k)}"
            if not _valid(v, t["values"]):
                return (
                    f"[{k!r}]",
                    f"expected {_describe_type(t['values'])}, got {_describe_value(v, t['values'])}",
                )
    if t.get("type") == "array" and isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if not _valid(v, t["items"]):
                return (
                    f"[{i}]",
                    f"expected {_describe_type(t['items'])}, got {_describe_value(v, t['items'])}",
                )
    return None


def _validation_message(s: _Schema, record: Any, err: _FastavroValidationError) -> str:
    """One 'name.field: expected ..., got ...' per bad field (fastavro stops at the first)."""
    if not isinstance(record, Mapping):
        return f"{s.name}: expected a record (mapping), got {_describe_value(record)}"
    parts = []
    for f in s.raw["fields"]:
        name, ftype = f["name"], f["type"]
        if name not in record:
            if "default" not in f:
                parts.append(f"{s.name}.{name}: missing required field (expected {_describe_type(ftype)})")
            continue
        value = record[name]
        if _valid(value, ftype):
            continue
        inner = _container_problem(ftype, value)
        if inner is not None:
            parts.append(f"{s.name}.{name}{inner[0]}: {inner[1]}")
        else:
            parts.append(f"{s.name}.{name}: expected {_describe_type(ftype)}, got {_describe_value(value, ftype)}")
    if not parts:  # fall back to fastavro's own account
        for e in err.errors:
            field = str(getattr(e, "field", "") or "").rsplit(".", 1)[-1] or "?"
            parts.append(
                f"{s.name}.{field}: expected {_describe_type(e.schema)}, got {_describe_value(e.datum, e.schema)}"
            )
    return "; ".join(parts) or f"{s.name}: record does not match the schema"


# --------------------------------------------------------------------------- codec

_FROM_ENV = object()


class AvroCodec:
    """Schemas of one folder (current ``*.avsc`` + ``history/v*/``) and their framing.

    ``registry``: a Schema Registry client (anything with
    ``register_schema(subject, schema) -> int`` and ``get_schema(schema_id)`` returning
    an object with ``schema_str``), ``None`` for "no registry" (single-object
    framing), or left out to follow ``SCHEMA_REGISTRY_URL`` (read at each call, so a
    changed environment takes effect; the client is built once per URL).
    """

    def __init__(self, schema_dir: str | Path | None = None, *, registry: Any = _FROM_ENV):
        self.schema_dir = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
        self._current: dict[str, _Schema] = {}
        self._by_fp: dict[bytes, _Schema] = {}
        self.history: dict[str, dict[str, dict]] = {}  # version -> name -> raw
        for name, raw in _load_dir(self.schema_dir).items():
            try:
                s = _Schema.build(name, "current", raw)
            except Exception as e:
                raise ValueError(f"{self.schema_dir / (name + '.avsc')}: {e}") from e
            self._current[name] = s
            self._by_fp[s.fingerprint] = s
        for label, d in _history_versions(self.schema_dir):
            self.history[label] = raws = _load_dir(d)
            for name, raw in raws.items():
                try:
                    s = _Schema.build(name, label, raw)
                except Exception as e:
                    raise ValueError(f"{d / (name + '.avsc')}: {e}") from e
                self._by_fp.setdefault(s.fingerprint, s)
        self._lock = threading.Lock()
        self._fixed_registry = registry
        self._env_url: str | None = None
        self._env_client: Any = None
        self._cache_owner: Any = None
        self._ids: dict[str, int] = {}  # subject -> schema id
        self._by_id: dict[int, _Schema] = {}  # schema id -> writer schema

    # -- schemas

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._current))

    def _get(self, name: str) -> _Schema:
        try:
            return self._current[name]
        except KeyError:
            raise UnknownSchemaError(f"unknown schema {name!r}; known: {', '.join(self.names)}") from None

    def schema(self, name: str) -> dict:
        """The current schema of ``name`` as JSON (a copy)."""
        return json.loads(self._get(name).schema_str)

    def fingerprint(self, name: str) -> bytes:
        """8-byte CRC-64-AVRO fingerprint of the current schema (single-object order)."""
        return self._get(name).fingerprint

    # -- registry

    def set_registry(self, registry: Any = _FROM_ENV) -> None:
        """Inject a registry client (``None`` = never use one); no argument = env."""
        with self._lock:
            self._fixed_registry = registry
            self._reset_registry_caches(None)

    def _reset_registry_caches(self, owner: Any) -> None:
        self._cache_owner = owner
        self._ids = {}
        self._by_id = {}

    def _registry(self) -> Any:
        reg = self._fixed_registry
        if reg is _FROM_ENV:
            url = (os.environ.get(REGISTRY_URL_ENV) or "").strip() or None
            if url is None:
                return None
            if url != self._env_url or self._env_client is None:
                with self._lock:
                    if url != self._env_url or self._env_client is None:
                        self._env_client = _make_registry_client(url)
                        self._env_url = url
            reg = self._env_client
        if reg is not None and reg is not self._cache_owner:
            with self._lock:
                if reg is not self._cache_owner:
                    self._reset_registry_caches(reg)
        return reg

    def _schema_id(self, reg: Any, s: _Schema, subject: str) -> int:
        key = f"{subject}\x00{s.fingerprint.hex()}"
        sid = self._ids.get(key)
        if sid is None:
            try:
                res = reg.register_schema(subject, _registry_schema_obj(s.schema_str))
            except Exception as e:
                raise SchemaRegistryError(
                    f"registering {s.name} under subject {subject!r} failed: {type(e).__name__}: {e}"
                ) from e
            sid = int(getattr(res, "schema_id", res))
            if not 0 <= sid < 2**32:
                raise SchemaRegistryError(f"registry returned an invalid schema id {sid}")
            self._ids[key] = sid
            self._by_id.setdefault(sid, s)
        return sid

    def _writer_by_id(self, sid: int, name: str) -> _Schema:
        w = self._by_id.get(sid)
        if w is not None:
            return w
        reg = self._registry()
        if reg is None:
            raise SchemaRegistryError(
                f"{name}: record is in the Confluent wire format (schema id {sid}) but no "
                f"Schema Registry is configured (set {REGISTRY_URL_ENV})"
            )
        w = self._by_id.get(sid)  # the cache may just have been reset/filled
        if w is not None:
            return w
        try:
            got = reg.get_schema(sid)
        except Exception as e:
            if _is_not_found(e):
                raise SchemaDecodeError(f"{name}: schema id {sid} is unknown to the Schema Registry") from e
            raise SchemaRegistryError(f"{name}: fetching schema id {sid} failed: {type(e).__name__}: {e}") from e
        schema_str = got if isinstance(got, str) else getattr(got, "schema_str", None)
        stype = getattr(got, "schema_type", None) or "AVRO"
        if not schema_str or stype.upper() != "AVRO":
            raise SchemaDecodeError(f"{name}: schema id {sid} is not an Avro schema ({stype})")
        try:
            w = _Schema.build(name, f"registry id {sid}", json.loads(schema_str))
        except Exception as e:
            raise SchemaDecodeError(
                f"{name}: schema id {sid} from the registry is not a usable Avro record schema: {e}"
            ) from e
        self._by_id[sid] = w
        return w

    # -- encode / decode

    def validate(self, name: str, record: Any) -> None:
        """Raise :class:`SchemaValidationError` unless ``record`` matches ``name``."""
        self._check(self._get(name), record)

    def _check(self, s: _Schema, record: Any) -> Any:
        if not isinstance(record, Mapping):
            to_rep = getattr(record, "to_representation", None)  # faust Record
            if to_rep is None:
                raise SchemaValidationError(f"{s.name}: expected a record (mapping), got {_describe_value(record)}")
            record = to_rep()
        for f in s.ts_fields:
            v = record.get(f)
            if isinstance(v, datetime) and v.tzinfo is None:
                raise SchemaValidationError(
                    f"{s.name}.{f}: naive datetime {v.isoformat()}; pass int epoch ms or a timezone-aware datetime"
                )
        try:
            _fastavro_validate(record, s.write, raise_errors=True)
        except _FastavroValidationError as e:
            raise SchemaValidationError(_validation_message(s, record, e)) from None
        return record

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        """Validate and serialise ``record`` with the current schema ``name``.

        Single-object framing, or the Confluent wire format when a registry is
        configured (subject ``<topic or name>-value``).
        """
        s = self._current.get(name) or self._get(name)
        reg = self._registry()
        if reg is None:
            header = s.header
        else:
            sid = self._schema_id(reg, s, subject_for(topic or name))
            header = CONFLUENT_MAGIC + sid.to_bytes(4, "big")
        if s.fast is not None and record.__class__ is dict:
            # fast path: generated one-pass check + encode (see schemas._fastpath.py)
            try:
                return s.fast(record, header)
            except _Mismatch:
                pass
            except Exception:  # e.g. an unencodable string: let fastavro explain
                pass
        record = self._check(s, record)  # raises SchemaValidationError with the field
        buf = io.BytesIO()
        buf.write(header)
        try:
            schemaless_writer(buf, s.write, record)
        except Exception as e:  # validation passed but fastavro cannot write it
            raise SchemaValidationError(f"{name}: cannot encode record: {e}") from e
        return buf.getvalue()

    def decode(self, name: str, data: bytes | bytearray | memoryview) -> dict:
        """Decode a single-object or Confluent-framed record into a dict of plain values
        (timestamps as int epoch ms, enums as str) shaped by the current schema."""
        s = self._get(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SchemaDecodeError(f"{name}: expected bytes, got {type(data).__name__}")
        if data.__class__ is not bytes:
            data = bytes(data)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < _SO_HEADER_LEN:
                raise SchemaDecodeError(f"{name}: truncated single-object header ({len(data)} bytes)")
            fp = data[2:_SO_HEADER_LEN]
            if fp == s.fingerprint:
                writer = s
            else:
                writer = self._by_fp.get(bytes(fp))
                if writer is None:
                    raise SchemaDecodeError(
                        f"{name}: unknown writer schema fingerprint {bytes(fp).hex()} (not "
                        f"the current schema nor any version in schemas/history/)"
                    )
                if writer.name != name:
                    raise SchemaDecodeError(f"{name}: record was written with schema {writer.label}, not {name}")
            offset = _SO_HEADER_LEN
        elif data[:1] == CONFLUENT_MAGIC:
            if len(data) < _CF_HEADER_LEN:
                raise SchemaDecodeError(f"{name}: truncated Confluent header ({len(data)} bytes)")
            writer = self._writer_by_id(int.from_bytes(data[1:_CF_HEADER_LEN], "big"), name)
            wname, rname = _record_name(writer.raw), _record_name(s.raw)
            if writer.fingerprint != s.fingerprint and wname != rname:
                raise SchemaDecodeError(f"{name}: schema {writer.label} is record {wname}, not {rname}")
            offset = _CF_HEADER_LEN
        else:
            raise SchemaDecodeError(
                f"{name}: unrecognised framing (first bytes {bytes(data[:2]).hex() or 'empty'}; "
                f"expected c301 = Avro single-object encoding or 00 = Confluent wire format)"
            )
        if writer.fingerprint == s.fingerprint:
            reader = None
            if s.fast_decode is not None:
                # fast path (see schemas._fastpath); on any doubt fastavro decides
                try:
                    return s.fast_decode(data, offset)
                except Exception:
                    pass
        else:
            reader = s.read
        fo = io.BytesIO(data)
        fo.seek(offset)
        try:
            record = schemaless_reader(fo, writer.read, reader)
        except Exception as e:
            raise SchemaDecodeError(
                f"{name}: body does not decode with writer schema {writer.label}: {type(e).__name__}: {e}"
            ) from e
        if fo.tell() != len(data):
            raise SchemaDecodeError(
                f"{name}: {len(data) - fo.tell()} trailing bytes after the record (writer schema {writer.label})"
            )
        return record


def _record_name(raw: Mapping[str, Any]) -> str:
    return str(raw.get("name", "")).rsplit(".", 1)[-1]


def subject_for(topic_or_name: str) -> str:
    """Schema Registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic_or_name}-value"


# --------------------------------------------------------------------------- module API

_default = AvroCodec()
SCHEMA_NAMES: tuple[str, ...] = _default.names


def default_codec() -> AvroCodec:
    """The codec of this package's schemas used by the module-level functions."""
    return _default


def encode(name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
    """Validate and encode ``record`` with schema ``name`` (see module doc for framing)."""
    return _default.encode(name, record, topic=topic)


def decode(name: str, data: bytes | bytearray | memoryview) -> dict:
    """Decode bytes written by :func:`encode` (either framing, any schema version)."""
    return _default.decode(name, data)


def validate(name: str, record: Any) -> None:
    """Raise :class:`SchemaValidationError` unless ``record`` matches schema ``name``."""
    _default.validate(name, record)


def schema(name: str) -> dict:
    """The current schema ``name`` as a JSON dict."""
    return _default.schema(name)


def fingerprint(name: str) -> bytes:
    """8-byte CRC-64-AVRO fingerprint of the current schema ``name``."""
    return _default.fingerprint(name)


def set_registry(registry: Any = _FROM_ENV) -> None:
    """Inject a Schema Registry client into the default codec (``None``: never use one;
    no argument: back to following ``SCHEMA_REGISTRY_URL``)."""
    _default.set_registry(registry)


def register_faust_codecs(names: Iterable[str] | None = None) -> dict[str, Any]:
    """Register ``avro_<name>`` faust codecs (all schemas by default); returns them."""
    from faust.serializers import codecs as faust_codecs

    AvroFaustCodec = _faust_codec_class()
    out = {}
    for name in names if names is not None else SCHEMA_NAMES:
        _default._get(name)
        codec = AvroFaustCodec(name)
        faust_codecs.register(f"avro_{name}", codec)
        out[f"avro_{name}"] = codec
    return out


def _faust_codec_class() -> type:
    from ringback.schemas.faust_codec import AvroFaustCodec

    return AvroFaustCodec


def __getattr__(attr: str) -> Any:  # lazy: importing faust costs ~0.2 s
    if attr == "AvroFaustCodec":
        cls = _faust_codec_class()
        globals()["AvroFaustCodec"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
