"""Backward-compatibility check of schema evolutions.

Backward compatible = a consumer using the NEW schema can read every record written
with the OLD schema (Avro schema resolution, writer = old, reader = new). That is
what lets workers be upgraded while old records sit in topics and changelogs.

``check_backward(old, new)`` returns a list of problems (empty = compatible):

1. statically, by the Avro specification's resolution rules: a reader field absent
   from the writer without a default, a writer enum symbol unknown to the reader
   (and no enum default), a type change that is not one of the allowed promotions
   (int -> long/float/double, long -> float/double, float -> double,
   string <-> bytes), a union branch the reader cannot take, a renamed named type
   without an alias, a changed fixed size; additionally a changed ``logicalType``
   (e.g. timestamp-millis -> timestamp-micros reads fine but means something else);
2. practically: sample records covering every enum symbol and union branch of the
   old schema are written with the old schema and read with the new one by fastavro.

``python -m schemas.compat`` checks every current ``schemas/*.avsc`` against every
version in ``schemas/history/v*/`` (backward-transitive) and exits 1 on a problem.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastavro

__all__ = ["check_backward", "check_all", "main"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NAMED = {"record", "enum", "fixed", "error"}
_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


def _load(schema: Any) -> Any:
    """A schema given as dict/list, a JSON string, a primitive name or a file path."""
    if isinstance(schema, Path):
        return json.loads(schema.read_text(encoding="utf-8"))
    if isinstance(schema, str):
        s = schema.strip()
        if s.startswith(("{", "[", '"')):
            return json.loads(s)
        if s in _PRIMITIVES:
            return s
        p = Path(s)
        if p.suffix == ".avsc" and p.exists():
            return json.loads(p.read_text(encoding="utf-8"))
        return s  # a named reference (only valid inside a schema)
    return schema


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


class _Names:
    """Named types of one schema, by full name (definitions are in document order)."""

    def __init__(self, schema: Any) -> None:
        self.types: dict[str, dict] = {}
        self._collect(schema, None)

    def _collect(self, s: Any, ns: str | None) -> None:
        if isinstance(s, list):
            for b in s:
                self._collect(b, ns)
        elif isinstance(s, dict):
            t = s.get("type")
            if t in _NAMED and "name" in s:
                full = _fullname(s["name"], s.get("namespace", ns))
                self.types[full] = {**s, "_ns": full.rpartition(".")[0] or None, "_full": full}
                ns = full.rpartition(".")[0] or None
                for f in s.get("fields", ()):
                    self._collect(f.get("type"), ns)
            elif t == "array":
                self._collect(s.get("items"), ns)
            elif t == "map":
                self._collect(s.get("values"), ns)
            elif isinstance(t, (dict, list)):
                self._collect(t, ns)

    def resolve(self, s: Any, ns: str | None) -> tuple[Any, str | None]:
        """(type as dict/list/primitive-str, namespace for its children)."""
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return s, ns
            for cand in (_fullname(s, ns), s):
                if cand in self.types:
                    d = self.types[cand]
                    return d, d["_ns"]
            raise KeyError(f"unknown type {s!r}")
        if isinstance(s, dict):
            t = s.get("type")
            if t in _NAMED and "name" in s:
                full = _fullname(s["name"], s.get("namespace", ns))
                d = self.types.get(full, s)
                return d, full.rpartition(".")[0] or None
            if isinstance(t, str) and t in _PRIMITIVES:
                return (s if s.get("logicalType") else t), ns
            if isinstance(t, (dict, list)) or (isinstance(t, str) and t not in ("array", "map")):
                return self.resolve(t, ns)
        return s, ns


def _kind(s: Any) -> str:
    if isinstance(s, list):
        return "union"
    if isinstance(s, dict):
        t = s.get("type")
        return "record" if t == "error" else str(t)
    return str(s)


def _logical(s: Any) -> str | None:
    return s.get("logicalType") if isinstance(s, dict) else None


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _describe(s: Any) -> str:
    k = _kind(s)
    if k == "union":
        return "[" + ", ".join(_describe(b) for b in s) + "]"
    if k in _NAMED or k == "record":
        return f"{k} {_short(s.get('_full') or s.get('name', '?'))}"
    if k == "array":
        return "array"
    if k == "map":
        return "map"
    lt = _logical(s)
    return f"{k} ({lt})" if lt else k


class _Checker:
    def __init__(self, old: Any, new: Any) -> None:
        self.wn = _Names(old)
        self.rn = _Names(new)
        self.problems: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    def names_match(self, w: dict, r: dict) -> bool:
        wf, rf = w.get("_full") or w.get("name", ""), r.get("_full") or r.get("name", "")
        if _short(wf) == _short(rf):
            return True
        aliases = set()
        for a in r.get("aliases", ()) or ():
            aliases.add(a)
            aliases.add(_fullname(a, r.get("_ns")))
        return wf in aliases or _short(wf) in aliases

    def matches(self, w: Any, r: Any) -> bool:
        """Avro's 'schemas match' test (shallow), used to pick a union branch."""
        wk, rk = _kind(w), _kind(r)
        if wk in _PRIMITIVES and rk in _PRIMITIVES:
            return wk == rk or (wk, rk) in _PROMOTIONS
        if wk != rk:
            return False
        if wk in ("record", "enum", "fixed"):
            return self.names_match(w, r)
        return wk in ("array", "map")

    def check(self, w: Any, wns: str | None, r: Any, rns: str | None, path: str) -> None:
        w, wns = self.wn.resolve(w, wns)
        r, rns = self.rn.resolve(r, rns)
        wk, rk = _kind(w), _kind(r)

        if wk == "union":
            for b in w:
                bw, bns = self.wn.resolve(b, wns)
                if rk == "union":
                    target = self._pick(bw, r, rns)
                    if target is None:
                        self.problems.append(
                            f"{path}: union branch {_describe(bw)} of the old schema has no "
                            f"matching branch in the new union {_describe(r)}"
                        )
                        continue
                    self.check(bw, bns, target[0], target[1], path)
                else:
                    if not self.matches(bw, r):
                        self.problems.append(
                            f"{path}: type changed from union {_describe(w)} to {_describe(r)}; "
                            f"old values of type {_describe(bw)} cannot be read"
                        )
                        continue
                    self.check(bw, bns, r, rns, path)
            return
        if rk == "union":
            target = self._pick(w, r, rns)
            if target is None:
                self.problems.append(
                    f"{path}: type changed from {_describe(w)} to union {_describe(r)} without a matching branch"
                )
                return
            self.check(w, wns, target[0], target[1], path)
            return

        if not self.matches(w, r):
            if wk in ("record", "enum", "fixed") and wk == rk:
                self.problems.append(
                    f"{path}: {wk} renamed from {_short(w.get('_full', w.get('name', '?')))} "
                    f"to {_short(r.get('_full', r.get('name', '?')))} without an alias"
                )
            else:
                self.problems.append(
                    f"{path}: type changed from {_describe(w)} to {_describe(r)}, which Avro "
                    f"schema resolution cannot promote"
                )
            return
        if wk in _PRIMITIVES:
            lw, lr = _logical(w), _logical(r)
            if lw != lr:
                self.problems.append(
                    f"{path}: logical type changed from {lw or 'none'} to {lr or 'none'} "
                    f"(readable, but the values mean something else)"
                )
            return
        if wk == "array":
            self.check(w["items"], wns, r["items"], rns, f"{path}[]")
            return
        if wk == "map":
            self.check(w["values"], wns, r["values"], rns, f"{path}{{}}")
            return
        if wk == "fixed":
            if w.get("size") != r.get("size"):
                self.problems.append(f"{path}: fixed size changed from {w.get('size')} to {r.get('size')}")
            return
        if wk == "enum":
            if r.get("default") is not None and r["default"] in r.get("symbols", ()):
                return  # unknown symbols read as the reader's default
            removed = [s for s in w.get("symbols", ()) if s not in r.get("symbols", ())]
            for sym in removed:
                self.problems.append(
                    f"{path}: enum {_short(r.get('_full', r.get('name', '?')))} symbol "
                    f"{sym!r} removed (old records with it cannot be read; keep it or give "
                    f"the enum a default)"
                )
            return
        if wk == "record":
            key = (w.get("_full", w.get("name")), r.get("_full", r.get("name")))
            if key in self.seen:
                return
            self.seen.add(key)
            wfields = {f["name"]: f for f in w.get("fields", ())}
            rname = _short(r.get("_full", r.get("name", "?")))
            for rf in r.get("fields", ()):
                wf = wfields.get(rf["name"])
                if wf is None:
                    for a in rf.get("aliases", ()) or ():
                        if a in wfields:
                            wf = wfields[a]
                            break
                fpath = f"{path}.{rf['name']}" if path else f"{rname}.{rf['name']}"
                if wf is None:
                    if "default" not in rf:
                        self.problems.append(
                            f'{fpath}: new field without a default (old records do not have it; add "default")'
                        )
                    continue
                self.check(wf["type"], wns, rf["type"], rns, fpath)
            return

    def _pick(self, w: Any, union: list, rns: str | None) -> tuple[Any, str | None] | None:
        resolved = [self.rn.resolve(b, rns) for b in union]
        for b, bns in resolved:  # exact kind first, then promotions (Avro: first match)
            if _kind(b) == _kind(w) and self.matches(w, b):
                return b, bns
        for b, bns in resolved:
            if self.matches(w, b):
                return b, bns
        return None


# --------------------------------------------------------------------------- samples


def _max_variants(s: Any, names: _Names, ns: str | None, seen: set) -> int:
    s, ns = names.resolve(s, ns)
    k = _kind(s)
    if k == "union":
        return max([len(s)] + [_max_variants(b, names, ns, seen) for b in s])
    if k == "enum":
        return len(s.get("symbols", ())) or 1
    if k == "array":
        return _max_variants(s["items"], names, ns, seen)
    if k == "map":
        return _max_variants(s["values"], names, ns, seen)
    if k == "record":
        full = s.get("_full", s.get("name"))
        if full in seen:
            return 1
        seen = seen | {full}
        return max([1] + [_max_variants(f["type"], names, ns, seen) for f in s.get("fields", ())])
    return 1


def _sample(s: Any, names: _Names, ns: str | None, i: int, depth: int = 0) -> Any:
    """Sample value number i of a type: cycles through union branches/enum symbols."""
    s, ns = names.resolve(s, ns)
    k = _kind(s)
    if k == "union":
        if depth > 8:
            return (
                None
                if "null" in [_kind(names.resolve(b, ns)[0]) for b in s]
                else _sample(s[0], names, ns, i, depth + 1)
            )
        b = s[i % len(s)]
        return _sample(b, names, ns, i, depth + 1)
    if k == "null":
        return None
    if k == "boolean":
        return i % 2 == 0
    if k in ("int", "long"):
        if _logical(s) in ("timestamp-millis",):
            return 1_732_640_000_000 + i
        if _logical(s) in ("timestamp-micros",):
            return 1_732_640_000_000_000 + i
        return 7 + i
    if k in ("float", "double"):
        return 1.5 + i
    if k == "bytes":
        return bytes([i % 256, 1, 2])
    if k == "string":
        return f"sample-{i}"
    if k == "fixed":
        return bytes([i % 256]) * int(s.get("size", 0))
    if k == "enum":
        syms = s.get("symbols", ())
        return syms[i % len(syms)] if syms else None
    if k == "array":
        return [_sample(s["items"], names, ns, i, depth + 1)] if depth < 8 else []
    if k == "map":
        return {f"k{i}": _sample(s["values"], names, ns, i, depth + 1)} if depth < 8 else {}
    if k == "record":
        return {f["name"]: _sample(f["type"], names, ns, i, depth + 1) for f in s.get("fields", ())}
    return None


def sample_records(schema: Any, limit: int = 32) -> list[Any]:
    """Records of ``schema`` that together use every enum symbol and union branch."""
    schema = _load(schema)
    names = _Names(schema)
    n = min(limit, max(2, _max_variants(schema, names, None, set())))
    return [_sample(schema, names, None, i) for i in range(n)]


def _practical(old: Any, new: Any) -> list[str]:
    try:
        w = fastavro.parse_schema(json.loads(json.dumps(old)))
    except Exception as e:
        return [f"old schema does not parse: {e}"]
    try:
        r = fastavro.parse_schema(json.loads(json.dumps(new)))
    except Exception as e:
        return [f"new schema does not parse: {e}"]
    problems = []
    for i, rec in enumerate(sample_records(old)):
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, w, rec)
        except Exception as e:  # pragma: no cover - the generator should be right
            problems.append(f"cannot write sample #{i} with the old schema: {e}")
            continue
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except Exception as e:
            problems.append(f"old sample record #{i} is not readable with the new schema: {type(e).__name__}: {e}")
            break
    return problems


def check_backward(old_schema: Any, new_schema: Any) -> list[str]:
    """Problems that stop ``new_schema`` from reading data written with ``old_schema``.

    Schemas may be dicts/lists (parsed JSON), JSON strings or ``.avsc`` paths.
    An empty list means backward compatible.
    """
    old, new = _load(old_schema), _load(new_schema)
    for label, s in (("old", old), ("new", new)):
        try:
            fastavro.parse_schema(json.loads(json.dumps(s)))
        except Exception as e:
            return [f"{label} schema does not parse: {type(e).__name__}: {e}"]
    c = _Checker(old, new)
    try:
        c.check(old, None, new, None, "")
    except KeyError as e:
        c.problems.append(f"cannot resolve a type reference: {e}")
    problems = list(c.problems)
    practical = _practical(old, new)
    if practical and not problems:
        problems.extend(practical)
    elif practical:
        problems.append("(confirmed: " + practical[0] + ")")
    return problems


def check_all(schema_dir: str | Path | None = None) -> dict[str, list[str]]:
    """{"<name> vs <version>": problems} for every current schema and history version.

    Also reports a history schema whose current file was deleted, and a current file
    that does not parse.
    """
    from ringback.schemas.codec import SCHEMA_DIR, _history_versions

    root = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
    current = {p.stem: p for p in sorted(root.glob("*.avsc"))}
    results: dict[str, list[str]] = {}
    for name, p in current.items():
        try:
            fastavro.parse_schema(json.loads(p.read_text(encoding="utf-8")))
        except Exception as e:
            results[f"{name} (current)"] = [f"does not parse: {type(e).__name__}: {e}"]
    for label, d in _history_versions(root):
        for hp in sorted(d.glob("*.avsc")):
            key = f"{hp.stem} vs history/{label}"
            if hp.stem not in current:
                results[key] = [
                    f"schemas/{hp.stem}.avsc was removed but history/{label} has it "
                    f"(records of it may still be in topics)"
                ]
                continue
            if f"{hp.stem} (current)" in results:
                continue
            results[key] = check_backward(hp, current[hp.stem])
    return results


def main(argv: Iterable[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m schemas.compat",
        description="Check every current schema against every schemas/history version "
        "(backward compatibility: new readers read old data).",
    )
    ap.add_argument("--dir", default=None, help="schema folder (default: this package)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    args = ap.parse_args(list(argv) if argv is not None else None)
    results = check_all(args.dir)
    bad = 0
    for key, problems in sorted(results.items()):
        if problems:
            bad += 1
            print(f"FAIL {key}")
            for p in problems:
                print(f"  - {p}")
        elif not args.quiet:
            print(f"ok   {key}")
    if not results:
        print("no schemas found")
        return 1
    print(f"{len(results) - bad}/{len(results)} compatible" + (f", {bad} FAILED" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
