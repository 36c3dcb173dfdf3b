"""Avro codec for every ringback topic, on fastavro.

``encode(name, record) -> bytes`` and ``decode(name, data) -> dict``, where ``name``
is the stem of a schema file in this folder (``"call_event"``, ``"outcome"``, ...).

Values
    * Timestamps (``timestamp-millis``): ``encode`` accepts ``int`` epoch milliseconds
      or a timezone-aware :class:`datetime.datetime` (a naive one is rejected: its zone
      would be a guess). ``decode`` returns plain ``int`` epoch milliseconds: records are
      read with the logical types stripped from the schemas (a ``long`` on the wire).
    * Enums are plain ``str`` symbols both ways, unions the bare value.
    * Keys not in the schema are ignored on encode (e.g. faust's ``__faust`` metadata);
      a missing field takes the schema default, or fails validation.

Validation
    Every record is validated before it is written; a mismatch raises
    :class:`SchemaValidationError` naming the field, e.g.
    ``call_event.caller: expected string, got None`` (see ``schemas.validation``).

Framing (bytes layout)
    * No registry (the default): Avro *single-object encoding* -- ``C3 01`` + 8-byte
      little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
      Form + Avro binary body.
    * After ``use_registry(url)``: the Confluent wire format -- ``00`` + 4-byte schema
      id + body, through confluent-kafka's serializers (``schemas.registry``); the
      schema is registered under the subject ``<topic or name>-value``.
    ``decode`` accepts both. A single-object writer schema is looked up by fingerprint
    among the current schema and every version in ``history/`` and resolved to the
    current (reader) schema, so records written before an evolution still read.
    Bad magic, an unknown fingerprint or schema id, a body that does not match the
    writer schema, or (single-object) trailing bytes raise :class:`SchemaDecodeError`.

Faust codecs live in ``schemas.faust_codec``.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from ringback.schemas.validation import RecordValidator, SchemaValidationError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from ringback.schemas.registry import ConfluentFraming

__all__ = [
    "SCHEMA_DIR",
    "SCHEMA_NAMES",
    "AvroCodec",
    "SchemaDecodeError",
    "SchemaRegistryError",
    "SchemaValidationError",
    "UnknownSchemaError",
    "decode",
    "default_codec",
    "encode",
    "history_versions",
    "schema",
    "use_registry",
    "validate",
]

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_NAMES: tuple[str, ...] = tuple(sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")))
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER = 10  # magic + 8-byte fingerprint
_CONFLUENT_HEADER = 5  # magic + 4-byte schema id
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class SchemaDecodeError(ValueError):
    """Bytes cannot be decoded: bad framing, unknown writer schema, corrupt body."""


class SchemaRegistryError(RuntimeError):
    """The Schema Registry is needed but not configured or failing.

    Not a ``ValueError``: an operational problem, not bad data, so consumers do not
    dead-letter the record because of it.
    """


class UnknownSchemaError(KeyError):
    """No schema file with that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _strip_logical_types(avro_type: Any) -> Any:
    """A copy of a schema without logicalType annotations (values read as plain ints)."""
    if isinstance(avro_type, list):
        return [_strip_logical_types(x) for x in avro_type]
    if not isinstance(avro_type, dict):
        return avro_type
    if "logicalType" in avro_type and isinstance(avro_type.get("type"), str):
        rest = {k: v for k, v in avro_type.items() if k != "logicalType"}
        return rest["type"] if set(rest) == {"type"} else rest
    out = {k: _strip_logical_types(v) if k in ("type", "items", "values") else v for k, v in avro_type.items()}
    if "fields" in avro_type:
        out["fields"] = [{**f, "type": _strip_logical_types(f["type"])} for f in avro_type["fields"]]
    return out


def history_versions(schema_dir: Path) -> list[tuple[str, Path]]:
    """[(label, folder)] of ``history/v<N>``, oldest first."""
    folders = [d for d in (schema_dir / "history").glob("v*") if d.is_dir() and d.name[1:].isdigit()]
    return [(d.name, d) for d in sorted(folders, key=lambda d: int(d.name[1:]))]


@dataclass(frozen=True, eq=False)
class _Schema:
    name: str  # file stem, e.g. "call_event"
    version: str  # "current", "v1", ...
    raw: dict  # the JSON of the file
    schema_str: str  # compact JSON: what is registered with a registry
    read: Any  # parsed, logical types stripped (returns ints)
    header: bytes  # single-object header: C3 01 + fingerprint
    validator: RecordValidator  # parsed with logical types (accepts aware datetimes)

    @classmethod
    def load(cls, path: Path, version: str) -> _Schema:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("type") != "record":
                raise ValueError("not an Avro record schema")
            fingerprint = fastavro_fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
            return cls(
                name=path.stem,
                version=version,
                raw=raw,
                schema_str=json.dumps(raw, separators=(",", ":")),
                read=fastavro.parse_schema(_strip_logical_types(raw)),
                header=SINGLE_OBJECT_MAGIC + bytes.fromhex(fingerprint),
                validator=RecordValidator(path.stem, raw, fastavro.parse_schema(raw)),
            )
        except ValueError as e:  # JSONDecodeError and fastavro's SchemaParseException are ValueErrors
            raise ValueError(f"{path}: {e}") from e

    @property
    def label(self) -> str:
        return f"{self.name} ({self.version})"


class AvroCodec:
    """The schemas of one folder (current ``*.avsc`` + ``history/v*/``) and their framing.

    ``registry``: a confluent-kafka ``SchemaRegistryClient`` for the Confluent wire
    format, or ``None`` for single-object encoding.
    """

    def __init__(self, schema_dir: str | Path | None = None, *, registry: SchemaRegistryClient | None = None):
        self.schema_dir = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
        self._current = {p.stem: _Schema.load(p, "current") for p in sorted(self.schema_dir.glob("*.avsc"))}
        self._by_header = {s.header: s for s in self._current.values()}
        for label, folder in history_versions(self.schema_dir):
            for path in sorted(folder.glob("*.avsc")):
                old = _Schema.load(path, label)
                self._by_header.setdefault(old.header, old)
        self._registry: ConfluentFraming | None = None
        self.use_registry(registry)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._current)

    def _get(self, name: str) -> _Schema:
        try:
            return self._current[name]
        except KeyError:
            raise UnknownSchemaError(f"unknown schema {name!r}; known: {', '.join(self.names)}") from None

    def schema(self, name: str) -> dict:
        """The current schema ``name`` as JSON (a copy)."""
        return json.loads(self._get(name).schema_str)

    def fingerprint(self, name: str) -> bytes:
        """The 8-byte CRC-64-AVRO fingerprint of the current schema (single-object order)."""
        return self._get(name).header[2:]

    def use_registry(self, registry: SchemaRegistryClient | None) -> None:
        """Write the Confluent wire format through ``registry`` from now on (``None``: single-object)."""
        if registry is None:
            self._registry = None
            return
        from ringback.schemas.registry import ConfluentFraming  # confluent's serializers: ~0.4 s to import

        self._registry = ConfluentFraming(registry)

    def validate(self, name: str, record: Any) -> None:
        """Raise :class:`SchemaValidationError` unless ``record`` matches ``name``."""
        self._get(name).validator(record)

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        """Validate and write ``record`` with the current schema ``name``.

        Single-object framing, or the Confluent wire format when a registry is in use
        (subject ``<topic or name>-value``).
        """
        s = self._get(name)
        record = s.validator(record)
        if self._registry is not None:
            try:
                return self._registry.encode(s.schema_str, record, topic or name)
            except (ValueError, TypeError) as e:  # fastavro: validated, yet not writable
                raise SchemaValidationError(f"{name}: cannot encode record: {e}") from e
            except Exception as e:
                raise SchemaRegistryError(f"{name}: the Schema Registry failed: {type(e).__name__}: {e}") from e
        buf = io.BytesIO()
        buf.write(s.header)
        try:
            fastavro.schemaless_writer(buf, s.validator.parsed, record)
        except Exception as e:  # validated, yet not writable (e.g. a lone surrogate in a string)
            raise SchemaValidationError(f"{name}: cannot encode record: {e}") from e
        return buf.getvalue()

    def decode(self, name: str, data: bytes | bytearray | memoryview) -> dict:
        """A single-object or Confluent-framed record as a dict of plain values
        (timestamps as int epoch ms, enums as str) shaped by the current schema."""
        s = self._get(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SchemaDecodeError(f"{name}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            return self._decode_single_object(s, data)
        if data[:1] == CONFLUENT_MAGIC:
            return self._decode_confluent(s, data)
        raise SchemaDecodeError(
            f"{name}: unrecognised framing (first bytes {data[:2].hex() or 'empty'}; "
            f"expected c301 = Avro single-object encoding or 00 = Confluent wire format)"
        )

    def _decode_single_object(self, s: _Schema, data: bytes) -> dict:
        if len(data) < _SINGLE_OBJECT_HEADER:
            raise SchemaDecodeError(f"{s.name}: truncated single-object header ({len(data)} bytes)")
        header = data[:_SINGLE_OBJECT_HEADER]
        writer = s if header == s.header else self._by_header.get(header)
        if writer is None:
            raise SchemaDecodeError(
                f"{s.name}: unknown writer schema fingerprint {header[2:].hex()} "
                f"(not the current schema nor any version in history/)"
            )
        if writer.name != s.name:
            raise SchemaDecodeError(f"{s.name}: record was written with schema {writer.label}, not {s.name}")
        body = io.BytesIO(data)
        body.seek(_SINGLE_OBJECT_HEADER)
        try:  # reader None: the writer schema is the current one, nothing to resolve
            record = fastavro.schemaless_reader(body, writer.read, None if writer is s else s.read)
        except Exception as e:
            raise SchemaDecodeError(
                f"{s.name}: body does not decode with writer schema {writer.label}: {type(e).__name__}: {e}"
            ) from e
        if body.tell() != len(data):
            raise SchemaDecodeError(
                f"{s.name}: {len(data) - body.tell()} trailing bytes after the record (writer schema {writer.label})"
            )
        assert isinstance(record, dict)  # a record schema reads as a dict
        return record

    def _decode_confluent(self, s: _Schema, data: bytes) -> dict:
        if len(data) < _CONFLUENT_HEADER:
            raise SchemaDecodeError(f"{s.name}: truncated Confluent header ({len(data)} bytes)")
        schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER], "big")
        if self._registry is None:
            raise SchemaRegistryError(
                f"{s.name}: record is in the Confluent wire format (schema id {schema_id}) "
                f"but no Schema Registry is configured"
            )
        try:  # asked apart from the body, so that a registry failure is not taken for bad data
            self._registry.writer_schema(schema_id)
        except Exception as e:
            if getattr(e, "http_status_code", None) == 404:
                raise SchemaDecodeError(f"{s.name}: schema id {schema_id} is unknown to the Schema Registry") from e
            raise SchemaRegistryError(
                f"{s.name}: fetching schema id {schema_id} failed: {type(e).__name__}: {e}"
            ) from e
        try:
            record = self._registry.decode(s.schema_str, data)
        except Exception as e:
            raise SchemaDecodeError(
                f"{s.name}: body does not decode with writer schema id {schema_id}: {type(e).__name__}: {e}"
            ) from e
        for field in s.validator.timestamp_fields:  # fastavro converts by the writer schema's logical types
            value = record.get(field)
            if isinstance(value, datetime):
                record[field] = (value - _EPOCH) // _MILLISECOND
        return record


@functools.cache
def default_codec() -> AvroCodec:
    """The codec of this package's schemas, used by the module-level functions."""
    return AvroCodec()


def use_registry(url: str | None) -> None:
    """Encode in the Confluent wire format through the Schema Registry at ``url`` from now
    on (``None``: single-object encoding). Called once at process start-up."""
    if url is None:
        default_codec().use_registry(None)
        return
    from ringback.schemas.registry import client_for  # confluent's serializers: ~0.4 s to import

    default_codec().use_registry(client_for(url))


def encode(name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
    """Validate and encode ``record`` with schema ``name`` (see the module doc for framing)."""
    return default_codec().encode(name, record, topic=topic)


def decode(name: str, data: bytes | bytearray | memoryview) -> dict:
    """Decode bytes written by :func:`encode` (either framing, any schema version)."""
    return default_codec().decode(name, data)


def validate(name: str, record: Any) -> None:
    """Raise :class:`SchemaValidationError` unless ``record`` matches schema ``name``."""
    default_codec().validate(name, record)


def schema(name: str) -> dict:
    """The current schema ``name`` as a JSON dict."""
    return default_codec().schema(name)
