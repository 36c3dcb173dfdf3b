"""Backward compatibility of schema evolutions, by the Apache ``avro`` package's checker.

Backward compatible = a consumer using the NEW schema reads every record written with
the OLD one (Avro schema resolution, writer = old, reader = new): workers are upgraded
while old records sit in topics and changelogs.

``check_backward(old, new)`` lists the problems (empty = compatible): the verdict of
``avro.compatibility.ReaderWriterCompatibilityChecker``, one line per field it blames,
plus a changed ``logicalType`` (e.g. timestamp-millis to timestamp-micros), which Avro
resolution reads without complaint but whose values then mean something else.

``python -m ringback.schemas.compat`` checks every current ``*.avsc`` against every
``history/v*/`` version (backward-transitive) and exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType, lookup_writer_field
from avro.errors import AvroException

from ringback.schemas.codec import SCHEMA_DIR, history_versions

__all__ = ["check_all", "check_backward", "main"]


def _load(schema: Any) -> Any:
    """A schema given as parsed JSON, a JSON string or an ``.avsc`` path."""
    if isinstance(schema, Path):
        return json.loads(schema.read_text(encoding="utf-8"))
    if isinstance(schema, str):
        return json.loads(schema)
    return schema


def check_backward(old_schema: Any, new_schema: Any) -> list[str]:
    """Problems that stop ``new_schema`` from reading data written with ``old_schema``.

    Schemas may be parsed JSON, JSON strings or ``.avsc`` paths.
    """
    old, new = _load(old_schema), _load(new_schema)
    parsed = {}
    for label, raw in (("old", old), ("new", new)):
        try:
            parsed[label] = avro.schema.parse(json.dumps(raw))
        except AvroException as e:
            return [f"{label} schema does not parse: {e}"]
    reader, writer = parsed["new"], parsed["old"]
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    problems = []
    if result.compatibility is SchemaCompatibilityType.incompatible:
        # The result's messages are not tied to its locations: ask again field by field.
        blamed = sorted({_top_level(location) for location in result.locations} - {"/"})
        problems = [_explain(reader, writer, location) for location in blamed]
    return problems + _logical_type_changes(old, new)


def _top_level(location: str) -> str:
    """'/fields/2/type/symbols' -> '/fields/2'; '/name' stays."""
    parts = location.strip("/").split("/")
    return "/" + "/".join(parts[:2]) if parts[0] == "fields" else "/" + parts[0]


def _explain(reader: Any, writer: Any, location: str) -> str:
    if not location.startswith("/fields/"):
        return f"{reader.name}: record renamed from {writer.fullname} without an alias"
    field = reader.fields[int(location.rsplit("/", 1)[1])]
    where = f"{reader.name}.{field.name}"
    writer_field = lookup_writer_field(writer_schema=writer, reader_field=field)
    if writer_field is None:
        return f"{where}: new field without a default (old records do not have it)"
    result = ReaderWriterCompatibilityChecker().get_compatibility(field.type, writer_field.type)
    kinds = ", ".join(sorted({i.value.replace("_", " ") for i in result.incompatibilities}))
    return f"{where}: {kinds}: {'; '.join(sorted(result.messages))}"


def _logical_types(avro_type: Any) -> set[str]:
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    return {b["logicalType"] for b in branches if isinstance(b, dict) and "logicalType" in b}


def _logical_type_changes(old: Any, new: Any) -> list[str]:
    old_fields = {f["name"]: f for f in old.get("fields", ())}
    problems = []
    for field in new.get("fields", ()):
        names = [field["name"], *field.get("aliases", ())]
        before = next((old_fields[n] for n in names if n in old_fields), None)
        if before is None:
            continue
        was, now = _logical_types(before["type"]), _logical_types(field["type"])
        if was != now:
            problems.append(
                f"{new['name']}.{field['name']}: logical type changed from {', '.join(sorted(was)) or 'none'} "
                f"to {', '.join(sorted(now)) or 'none'} (readable, but the values mean something else)"
            )
    return problems


def check_all(schema_dir: str | Path | None = None) -> dict[str, list[str]]:
    """{"<name> vs history/<version>": problems} for every current schema and history version,
    plus a history schema whose current file was removed."""
    root = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
    current = {p.stem: p for p in sorted(root.glob("*.avsc"))}
    results: dict[str, list[str]] = {}
    for label, folder in history_versions(root):
        for old in sorted(folder.glob("*.avsc")):
            key = f"{old.stem} vs history/{label}"
            if old.stem in current:
                results[key] = check_backward(old, current[old.stem])
            else:
                results[key] = [f"{old.stem}.avsc was removed but history/{label} has it (records may be in topics)"]
    return results


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ringback.schemas.compat",
        description="Check every current schema against every history/ version "
        "(backward compatibility: new readers read old data).",
    )
    parser.add_argument("--dir", default=None, help="schema folder (default: this package's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(list(argv) if argv is not None else None)
    results = check_all(args.dir)
    if not results:
        print("no schema history found")
        return 1
    failed = 0
    for key, problems in sorted(results.items()):
        if problems:
            failed += 1
            print(f"FAIL {key}")
            for problem in problems:
                print(f"  - {problem}")
        elif not args.quiet:
            print(f"ok   {key}")
    print(f"{len(results) - failed}/{len(results)} compatible" + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
