#!/usr/bin/env python3
"""Cross-checks Constellation's Avro codec against fastavro, an independent implementation.

Usage: crosscheck_fastavro.py DUMP_EXECUTABLE SOURCE_DIR

For every schema the dump executable prints (see tests/support/crosscheck_dump.c) this checks
that fastavro, reading the .avsc from the source tree, computes the same Parsing Canonical Form
and CRC-64-AVRO fingerprint, decodes our single-object bytes to the same value, and encodes that
value to the same bytes.
"""
import io
import json
import subprocess
import sys

try:
    import fastavro
    from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
except ImportError:
    sys.exit("fastavro is not installed: run `make deps` (it creates .venv from "
             "infra/local/requirements.txt)")


def expected(value, schema):
    """Our JSON form -> what fastavro returns (bytes fields become bytes, fixed too)."""
    t = schema if not isinstance(schema, dict) else schema.get("type")
    if isinstance(schema, list):
        if value is None:
            return None
        branch = schema[-1]  # the samples always take the last branch
        return expected(value, branch)
    if isinstance(schema, dict) and isinstance(t, (dict, list)):
        return expected(value, t)
    if t in ("bytes", "fixed"):
        return value.encode("latin-1")
    if t == "record":
        return {f["name"]: expected(value[f["name"]], f["type"]) for f in schema["fields"]}
    if t == "array":
        return [expected(v, schema["items"]) for v in value]
    if t == "map":
        return {k: expected(v, schema["values"]) for k, v in value.items()}
    return value


def plain(schema):
    """The schema without logicalType annotations: the bytes are the same, and fastavro then
    returns timestamps as the integers our JSON form carries."""
    if isinstance(schema, dict):
        return {k: plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain(v) for v in schema]
    return schema


def main():
    dump, source = sys.argv[1], sys.argv[2]
    out = subprocess.run([dump], check=True, capture_output=True, text=True).stdout
    failures = 0
    count = 0
    for line in out.splitlines():
        rec = json.loads(line)
        count += 1
        with open(f"{source}/{rec['path']}", encoding="utf-8") as f:
            raw = json.load(f)
        canonical = to_parsing_canonical_form(raw)
        fp = fingerprint(canonical, "CRC-64-AVRO")
        problems = []
        if canonical != rec["canonical"]:
            problems.append(f"canonical form differs:\n  ours     {rec['canonical']}\n  fastavro {canonical}")
        if fp != rec["fingerprint"]:
            problems.append(f"fingerprint differs: ours {rec['fingerprint']} fastavro {fp}")
        data = bytes.fromhex(rec["encoded"])
        if data[:2] != b"\xc3\x01" or data[2:10].hex() != fp:
            problems.append(f"header {data[:10].hex()} is not c301{fp}")
        parsed = parse_schema(plain(raw), _write_hint=False)
        decoded = fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, None)
        want = expected(rec["value"], raw)
        if decoded != want:
            problems.append(f"decoded value differs:\n  fastavro {decoded!r}\n  ours     {want!r}")
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, want)
        if buf.getvalue() != data[10:]:
            problems.append("fastavro encodes the value to different bytes:\n"
                            f"  ours     {data[10:].hex()}\n  fastavro {buf.getvalue().hex()}")
        for p in problems:
            print(f"{rec['path']}: {p}", file=sys.stderr)
        failures += bool(problems)
    if count == 0:
        sys.exit("the dump printed no schemas")
    print(f"fastavro crosscheck: {count} schemas, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
