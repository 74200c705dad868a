#!/usr/bin/env python3
"""Read the sink's golden files with Flink's own JSON changelog formats.

On demand, not in the default CI (needs `pip install apache-flink` and Java
17; ~30 s per format). For each format this declares the `all_types` table
with the Flink types our documented value mapping targets, reads
tests/golden/<format>-rows.jsonl through the filesystem connector in
streaming mode with 'format' = 'debezium-json' | 'canal-json' |
'maxwell-json', and checks the changelog Flink produces (+I, -U, +U, -D,
+I for the snapshot read) and every column's value. Exit code 0 = all
formats read as expected.

    python3 tests/flink/check_formats.py [debezium debezium-schema canal maxwell]
"""

import datetime as dt
import decimal
import os
import shutil
import sys
import tempfile

from pyflink.table import EnvironmentSettings, TableEnvironment

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")

# Column types per format: where formats map a MySQL type differently
# (documented in src/sink/format/*.rs), the Flink type differs too.
COMMON = [
    ("id", "INT"), ("ti", "TINYINT"), ("tiu", "SMALLINT"), ("si", "SMALLINT"),
    ("mi", "INT"), ("iu", "BIGINT"), ("bi", "BIGINT"), ("biu", "DECIMAL(20, 0)"),
    ("f", "FLOAT"), ("d", "DOUBLE"), ("dec", "DECIMAL(10, 4)"),
]
TAIL = [
    ("c", "STRING"), ("vc", "STRING"), ("tx", "STRING"), ("bin", "BYTES"),
    ("vb", "BYTES"), ("bl", "BYTES"), ("e", "STRING"),
]
TYPES = {
    "debezium": COMMON + [
        ("b1", "BOOLEAN"), ("b12", "BYTES"), ("y", "INT"), ("dt", "DATE"),
        ("dz", "DATE"), ("tm", "STRING"), ("dtm", "TIMESTAMP(3)"),
        ("dtz", "TIMESTAMP(0)"), ("ts", "TIMESTAMP(6)"), ("tsz", "TIMESTAMP(0)"),
    ] + TAIL + [("s", "STRING"), ("j", "STRING"), ("g", "ROW<wkb BYTES, srid INT>"), ("n", "INT")],
    "canal": COMMON + [
        ("b1", "TINYINT"), ("b12", "INT"), ("y", "INT"), ("dt", "DATE"),
        ("dz", "STRING"), ("tm", "STRING"), ("dtm", "TIMESTAMP(3)"),
        ("dtz", "STRING"), ("ts", "TIMESTAMP(6)"), ("tsz", "STRING"),
    ] + TAIL + [("s", "STRING"), ("j", "STRING"), ("g", "BYTES"), ("n", "INT")],
    "maxwell": COMMON + [
        ("b1", "BOOLEAN"), ("b12", "INT"), ("y", "INT"), ("dt", "DATE"),
        ("dz", "STRING"), ("tm", "STRING"), ("dtm", "TIMESTAMP(3)"),
        ("dtz", "STRING"), ("ts", "TIMESTAMP(6)"), ("tsz", "STRING"),
    ] + TAIL + [("s", "ARRAY<STRING>"), ("j", "STRING"), ("g", "BYTES"), ("n", "INT")],
}

KINDS = {"INSERT": "+I", "UPDATE_BEFORE": "-U", "UPDATE_AFTER": "+U", "DELETE": "-D"}

OLD_VC = 'Grüße, "world"\n'
NEW_VC = 'new "quoted" ✓'


def expected(fmt):
    """(row kind, id, vc, n, dec) in order, per our golden events."""
    return [
        ("+I", 1, OLD_VC, None, decimal.Decimal("-1234.5600")),
        ("-U", 1, OLD_VC, None, decimal.Decimal("-1234.5600")),
        ("+U", 1, NEW_VC, 7, decimal.Decimal("1.0000")),
        ("-D", 1, NEW_VC, 7, decimal.Decimal("1.0000")),
        ("+I", 2, OLD_VC, None, decimal.Decimal("-1234.5600")),
    ]


def check(name):
    # "debezium-schema": the Debezium file with the schema block, read with
    # 'debezium-json.schema-include' = 'true'.
    fmt = "debezium" if name == "debezium-schema" else name
    options = ", 'debezium-json.schema-include' = 'true'" if name == "debezium-schema" else ""
    src = tempfile.mkdtemp(prefix=f"flink-{name}-")
    shutil.copy(os.path.join(GOLDEN, f"{name}-rows.jsonl"), src)
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    cols = ",\n  ".join(f"`{n}` {t}" for n, t in TYPES[fmt])
    env.execute_sql(
        f"CREATE TABLE src (\n  {cols}\n) WITH ("
        f"'connector' = 'filesystem', 'path' = 'file://{src}', 'format' = '{fmt}-json'{options})"
    )
    rows = []
    with env.execute_sql("SELECT *, CAST(ts AS STRING) AS ts_text FROM src").collect() as results:
        for r in results:
            names = [n for n, _ in TYPES[fmt]] + ["ts_text"]
            rows.append((KINDS[r.get_row_kind().name], dict(zip(names, list(r)))))
    shutil.rmtree(src, ignore_errors=True)
    problems = []
    got = [(k, r["id"], r["vc"], r["n"], r["dec"]) for k, r in rows]
    if got != expected(fmt):
        problems.append(f"changelog differs:\n  got  {got}\n  want {expected(fmt)}")
    if rows:
        r = rows[0][1]
        want = {
            "ti": -128, "tiu": 255, "si": -32768, "mi": -8388608, "iu": 4294967295,
            "bi": -9223372036854775808, "biu": decimal.Decimal(18446744073709551615),
            "d": -1.5e300, "y": 2024, "dt": dt.date(2024, 2, 29), "tm": "-838:59:58.12",
            "dtm": dt.datetime(2024, 2, 29, 13, 45, 0, 120000),
            # PyFlink's Python datetime conversion keeps only milliseconds:
            # check the microseconds on Flink's own text form.
            "ts_text": "2024-02-29 13:45:00.000005", "c": "abc", "tx": "long text",
            "bin": b"a\x00\x00\x00", "vb": b"\xff\x00\x7f", "bl": b"blob\x00data",
            "e": "large", "j": '{"k":[1,2,{"x":null}]}',
        }
        if fmt == "debezium":
            want.update({"b1": True, "dz": None, "dtz": dt.datetime(1970, 1, 1), "tsz": None, "s": "a,c"})
        elif fmt == "canal":
            want.update({"b1": 1, "b12": 2748, "dz": "0000-00-00", "tsz": "0000-00-00 00:00:00", "s": "a,c"})
        else:
            want.update({"b1": True, "b12": 2748, "dz": "0000-00-00", "s": ["a", "c"]})
        for k, v in want.items():
            if r[k] != v:
                problems.append(f"column {k}: got {r[k]!r}, want {v!r}")
        if abs(r["f"] - 0.1) > 1e-6:
            problems.append(f"column f: got {r['f']!r}")
    return problems


def main():
    formats = sys.argv[1:] or ["debezium", "debezium-schema", "canal", "maxwell"]
    failed = False
    for fmt in formats:
        problems = check(fmt)
        print(f"{fmt}: {'ok' if not problems else 'FAILED'}")
        for p in problems:
            print("  " + p)
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
