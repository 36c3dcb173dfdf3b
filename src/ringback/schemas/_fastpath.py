"""Generated Avro binary encoders/decoders for flat record schemas (the hot path).

fastavro's ``validate`` + ``schemaless_writer`` cost ~30 us for a CallEvent and its
``schemaless_reader`` ~6 us; the code generated here checks types and writes the
Avro binary encoding in one pass, and reads it back, in a few microseconds. It is
only an accelerator, fastavro stays the reference:

* the encoder accepts a subset of what ``fastavro.validation.validate`` accepts
  (anything it is unsure about raises :class:`Mismatch`, and the caller then runs
  the full fastavro validation + writer, which produce the error message or the
  bytes), and writes exactly the bytes ``fastavro.schemaless_writer`` writes;
* the decoder returns exactly what ``fastavro.schemaless_reader`` returns for the
  same (writer == reader) schema with logical types stripped; on anything unusual
  (truncation, bad index, bad UTF-8, trailing bytes, ...) it raises and the caller
  asks fastavro, which produces the result or the error.

Both properties are checked by property tests in tests/unit/test_schemas.py.

Supported: a top-level record whose fields are null/boolean/int/long/float/double/
bytes/string, enums, ``timestamp-millis``, arrays and maps of those, and unions of
the scalar ones. ``compile_encoder`` returns ``None`` for anything else (the caller
then always uses fastavro).
"""

from __future__ import annotations

import numbers
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["Mismatch", "compile_encoder", "compile_decoder"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_ONE = tuple(bytes((i,)) for i in range(128))  # single-byte varints (already zigzagged)
_PACK_F = struct.Struct("<f").pack
_PACK_D = struct.Struct("<d").pack
_MISSING = object()


class Mismatch(Exception):
    """The fast encoder cannot (or must not) encode this record; use fastavro."""


def _long(n: int) -> bytes:
    """Zigzag varint of a long (caller checked the range)."""
    n = (n << 1) ^ (n >> 63)
    if n < 128:
        return _ONE[n]
    b = bytearray()
    while n >= 128:
        b.append((n & 0x7F) | 0x80)
        n >>= 7
    b.append(n)
    return bytes(b)


def _as_int(v: Any, lo: int, hi: int) -> int | None:
    """int value of v if fastavro's int/long validation accepts it, else None."""
    if v.__class__ is int:
        return v if lo <= v <= hi else None
    if isinstance(v, bool) or not isinstance(v, (int, numbers.Integral)):
        return None
    v = int(v)
    return v if lo <= v <= hi else None


def _ts_millis(v: Any) -> int | None:
    """Epoch ms of an int or an aware datetime (as fastavro converts it), else None."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            return None  # naive: rejected (by the slow path, with a message)
        d = v - _EPOCH
        v = (d.days * 86400 + d.seconds) * 1000 + int(d.microseconds / 1000)
        return v if _LONG_MIN <= v <= _LONG_MAX else None
    return _as_int(v, _LONG_MIN, _LONG_MAX)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, numbers.Real)) and not isinstance(v, bool)


def _enum_index(v: Any, index: dict, symbols: list) -> int | None:
    i = index.get(v) if v.__class__ is str else None
    if i is None:
        try:
            if v in symbols:  # fastavro's test (== semantics, e.g. str Enum members)
                return symbols.index(v)
        except Exception:
            return None
    return i


_SCALARS = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Gen:
    def __init__(self) -> None:
        self.ns: dict[str, Any] = {
            "_long": _long,
            "_ONE": _ONE,
            "_as_int": _as_int,
            "_ts_millis": _ts_millis,
            "_is_real": _is_real,
            "_enum_index": _enum_index,
            "_PACK_F": _PACK_F,
            "_PACK_D": _PACK_D,
            "Mismatch": Mismatch,
            "_MISSING": _MISSING,
            "_INT_MIN": _INT_MIN,
            "_INT_MAX": _INT_MAX,
            "_LONG_MIN": _LONG_MIN,
            "_LONG_MAX": _LONG_MAX,
        }
        self.n = 0

    def const(self, value: Any) -> str:
        self.n += 1
        name = f"_c{self.n}"
        self.ns[name] = value
        return name

    def tmp(self) -> str:
        self.n += 1
        return f"t{self.n}"

    @staticmethod
    def kind(t: Any) -> str | None:
        """Normalised kind of a (non-union) type, or None if unsupported."""
        if isinstance(t, str):
            return t if t in _SCALARS else None
        if isinstance(t, dict):
            lt = t.get("logicalType")
            base = t.get("type")
            if lt is not None:
                return "timestamp-millis" if (lt == "timestamp-millis" and base == "long") else None
            if base in _SCALARS:
                return base
            if base in ("enum", "array", "map"):
                return base
        return None

    def scalar(self, t: Any, v: str, ind: str) -> list[str] | None:
        """Lines that check v and append its encoding to out (raise Mismatch if bad)."""
        k = self.kind(t)
        if k == "null":
            return [f"{ind}if {v} is not None: raise Mismatch"]
        if k == "boolean":
            return [
                f"{ind}if {v} is True: out += b'\\x01'",
                f"{ind}elif {v} is False: out += b'\\x00'",
                f"{ind}else: raise Mismatch",
            ]
        if k == "string":
            return [
                f"{ind}if {v}.__class__ is not str and not isinstance({v}, str): raise Mismatch",
                f"{ind}{v} = {v}.encode(); n = len({v})",
                f"{ind}out += _ONE[n << 1] if n < 64 else _long(n); out += {v}",
            ]
        if k == "bytes":
            return [
                f"{ind}if not isinstance({v}, (bytes, bytearray)): raise Mismatch",
                f"{ind}out += _long(len({v})); out += {v}",
            ]
        if k in ("int", "long"):
            lo, hi = ("_INT_MIN", "_INT_MAX") if k == "int" else ("_LONG_MIN", "_LONG_MAX")
            return [
                f"{ind}{v} = _as_int({v}, {lo}, {hi})",
                f"{ind}if {v} is None: raise Mismatch",
                f"{ind}out += _long({v})",
            ]
        if k == "timestamp-millis":
            return [
                f"{ind}{v} = _ts_millis({v})",
                f"{ind}if {v} is None: raise Mismatch",
                f"{ind}out += _long({v})",
            ]
        if k in ("float", "double"):
            pack = "_PACK_F" if k == "float" else "_PACK_D"
            return [
                f"{ind}if not _is_real({v}): raise Mismatch",
                f"{ind}out += {pack}(float({v}))",
            ]
        if k == "enum":
            symbols = list(t["symbols"])
            idx = self.const({s: i for i, s in enumerate(symbols)})
            syms = self.const(symbols)
            return [
                f"{ind}{v} = {idx}.get({v}) if {v}.__class__ is str else _enum_index({v}, {idx}, {syms})",
                f"{ind}if {v} is None: raise Mismatch",
                f"{ind}out += _long({v})",
            ]
        return None

    def union_branch_test(self, t: Any, v: str) -> tuple[str, list[str]] | None:
        """(condition, encode-lines-after-condition) of one union branch."""
        k = self.kind(t)
        if k == "null":
            return f"{v} is None", []
        if k == "boolean":
            return f"{v}.__class__ is bool", [f"out += b'\\x01' if {v} else b'\\x00'"]
        if k == "string":
            return f"isinstance({v}, str)", [
                f"{v} = {v}.encode(); n = len({v})",
                f"out += _ONE[n << 1] if n < 64 else _long(n); out += {v}",
            ]
        if k == "bytes":
            return f"isinstance({v}, (bytes, bytearray))", [f"out += _long(len({v})); out += {v}"]
        if k in ("int", "long"):
            lo, hi = ("_INT_MIN", "_INT_MAX") if k == "int" else ("_LONG_MIN", "_LONG_MAX")
            w = self.tmp()
            return f"({w} := _as_int({v}, {lo}, {hi})) is not None", [f"out += _long({w})"]
        if k == "timestamp-millis":
            w = self.tmp()
            return f"({w} := _ts_millis({v})) is not None", [f"out += _long({w})"]
        if k in ("float", "double"):
            pack = "_PACK_F" if k == "float" else "_PACK_D"
            return f"_is_real({v})", [f"out += {pack}(float({v}))"]
        if k == "enum":
            symbols = list(t["symbols"])
            idx = self.const({s: i for i, s in enumerate(symbols)})
            syms = self.const(symbols)
            w = self.tmp()
            return f"({w} := _enum_index({v}, {idx}, {syms})) is not None", [f"out += _long({w})"]
        return None

    def value(self, t: Any, v: str, ind: str) -> list[str] | None:
        if isinstance(t, list):
            if not t:
                return None
            lines = []
            for i, b in enumerate(t):
                test = self.union_branch_test(b, v)
                if test is None:
                    return None
                cond, enc = test
                lines.append(f"{ind}{'if' if i == 0 else 'elif'} {cond}:")
                lines.append(f"{ind}    out += {self.const(_long(i))}")
                lines.extend(f"{ind}    {e}" for e in enc)
            lines.append(f"{ind}else: raise Mismatch")
            return lines
        k = self.kind(t)
        if k in ("array", "map"):
            inner_t = t["items"] if k == "array" else t["values"]
            if isinstance(inner_t, list) or self.kind(inner_t) in (None, "array", "map"):
                return None
            x = self.tmp()
            inner = self.scalar(inner_t, x, ind + "    ")
            if inner is None:
                return None
            if k == "array":
                return [
                    f"{ind}if {v}.__class__ is not list and {v}.__class__ is not tuple: raise Mismatch",
                    f"{ind}if {v}:",
                    f"{ind}    out += _long(len({v}))",
                    f"{ind}    for {x} in {v}:",
                    *["    " + line for line in inner],
                    f"{ind}out += b'\\x00'",
                ]
            key = self.tmp()
            return [
                f"{ind}if {v}.__class__ is not dict: raise Mismatch",
                f"{ind}if {v}:",
                f"{ind}    out += _long(len({v}))",
                f"{ind}    for {key}, {x} in {v}.items():",
                f"{ind}        if {key}.__class__ is not str: raise Mismatch",
                f"{ind}        {key} = {key}.encode()",
                f"{ind}        out += _long(len({key})); out += {key}",
                *["    " + line for line in inner],
                f"{ind}out += b'\\x00'",
            ]
        return self.scalar(t, v, ind)


def compile_encoder(raw: Any) -> Callable[[dict, bytes], bytes] | None:
    """``encoder(record: dict, prefix: bytes) -> prefix + body`` for a flat record
    schema (plain JSON as in the .avsc), or None if the schema is not supported."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        return None
    g = _Gen()
    body = ["def _encode(r, prefix):", "    out = bytearray(prefix)", "    get = r.get"]
    for f in raw["fields"]:
        v = g.tmp()
        default = g.const(f["default"]) if "default" in f else "_MISSING"
        body.append(f"    {v} = get({f['name']!r}, {default})")
        lines = g.value(f["type"], v, "    ")
        if lines is None:
            return None
        body.extend(lines)
    body.append("    return bytes(out)")
    src = "\n".join(body)
    code = compile(src, f"<avro encoder {raw.get('name')}>", "exec")
    exec(code, g.ns)
    fn = g.ns["_encode"]
    fn.__source__ = src  # for debugging
    return fn


# --------------------------------------------------------------------------- decoder

_UNPACK_F = struct.Struct("<f").unpack_from
_UNPACK_D = struct.Struct("<d").unpack_from


def _rlong(d: bytes, pos: int) -> tuple[int, int]:
    """Zigzag varint at d[pos:] -> (value, new pos); raises on truncation/overlong."""
    b = d[pos]
    n = b & 0x7F
    shift = 7
    pos += 1
    while b & 0x80:
        if shift > 63:
            raise Mismatch
        b = d[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


class _DGen(_Gen):
    def __init__(self) -> None:
        super().__init__()
        self.ns.update(_rlong=_rlong, _UNPACK_F=_UNPACK_F, _UNPACK_D=_UNPACK_D)

    @staticmethod
    def read_long(target: str, ind: str) -> list[str]:
        return [
            f"{ind}b = d[pos]",
            f"{ind}if b < 128: {target} = (b >> 1) ^ -(b & 1); pos += 1",
            f"{ind}else: {target}, pos = _rlong(d, pos)",
        ]

    def read(self, t: Any, target: str, ind: str) -> list[str] | None:
        """Lines that read one value of type t from d at pos into target."""
        if isinstance(t, list):
            if not t:
                return None
            i = self.tmp()
            lines = self.read_long(i, ind)
            for n, b in enumerate(t):
                inner = self.read(b, target, ind + "    ")
                if inner is None or isinstance(b, list):
                    return None
                lines.append(f"{ind}{'if' if n == 0 else 'elif'} {i} == {n}:")
                lines.extend(inner or [f"{ind}    pass"])
            lines.append(f"{ind}else: raise Mismatch")
            return lines
        k = self.kind(t)
        if k == "null":
            return [f"{ind}{target} = None"]
        if k == "boolean":
            return [
                f"{ind}b = d[pos]; pos += 1",
                f"{ind}if b == 1: {target} = True",
                f"{ind}elif b == 0: {target} = False",
                f"{ind}else: raise Mismatch",
            ]
        if k in ("string", "bytes"):
            conv = ".decode()" if k == "string" else ""
            return [
                *self.read_long("n", ind),
                f"{ind}if n < 0 or pos + n > end: raise Mismatch",
                f"{ind}{target} = d[pos:pos + n]{conv}; pos += n",
            ]
        if k in ("int", "long", "timestamp-millis"):
            lines = self.read_long(target, ind)
            if k == "int":
                lines.append(f"{ind}if not _INT_MIN <= {target} <= _INT_MAX: raise Mismatch")
            else:
                lines.append(f"{ind}if not _LONG_MIN <= {target} <= _LONG_MAX: raise Mismatch")
            return lines
        if k in ("float", "double"):
            unpack, size = ("_UNPACK_F", 4) if k == "float" else ("_UNPACK_D", 8)
            return [f"{ind}{target} = {unpack}(d, pos)[0]; pos += {size}", f"{ind}if pos > end: raise Mismatch"]
        if k == "enum":
            syms = self.const(tuple(t["symbols"]))
            i = self.tmp()
            return [
                *self.read_long(i, ind),
                f"{ind}if not 0 <= {i} < {len(t['symbols'])}: raise Mismatch",
                f"{ind}{target} = {syms}[{i}]",
            ]
        if k in ("array", "map"):
            inner_t = t["items"] if k == "array" else t["values"]
            if isinstance(inner_t, list) or self.kind(inner_t) in (None, "array", "map", "null"):
                return None
            x, cnt, key, j = self.tmp(), self.tmp(), self.tmp(), self.tmp()
            inner = self.read(inner_t, x, ind + "        ")
            if inner is None:
                return None
            lines = [f"{ind}{target} = {'[]' if k == 'array' else '{}'}"]
            lines += self.read_long(cnt, ind)
            lines.append(f"{ind}while {cnt}:")
            lines.append(f"{ind}    if {cnt} < 0:")
            lines.append(f"{ind}        {cnt} = -{cnt}")
            lines += self.read_long("_blocksize", ind + "        ")
            lines.append(f"{ind}    if {cnt} > end - pos: raise Mismatch")  # >= 1 byte per item
            lines.append(f"{ind}    for {j} in range({cnt}):")
            if k == "map":
                lines += self.read("string", key, ind + "        ")
            lines += inner
            if k == "array":
                lines.append(f"{ind}        {target}.append({x})")
            else:
                lines.append(f"{ind}        {target}[{key}] = {x}")
            lines += self.read_long(cnt, ind + "    ")
            return lines
        return None


def compile_decoder(raw: Any) -> Callable[[bytes, int], dict] | None:
    """``decoder(data: bytes, pos: int) -> dict`` reading one record of a flat record
    schema from data[pos:] to the very end (fails on trailing bytes), with
    timestamp-millis as int; None if the schema is not supported."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        return None
    g = _DGen()
    body = ["def _decode(d, pos):", "    end = len(d)"]
    names = []
    for f in raw["fields"]:
        v = g.tmp()
        lines = g.read(f["type"], v, "    ")
        if lines is None:
            return None
        body.extend(lines)
        names.append((f["name"], v))
    body.append("    if pos != end: raise Mismatch")
    body.append("    return {" + ", ".join(f"{n!r}: {v}" for n, v in names) + "}")
    src = "\n".join(body)
    code = compile(src, f"<avro decoder {raw.get('name')}>", "exec")
    exec(code, g.ns)
    fn = g.ns["_decode"]
    fn.__source__ = src
    return fn
