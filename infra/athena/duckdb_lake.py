#!/usr/bin/env python3
"""Runs the named Athena queries (queries.sql) on a local lake with DuckDB.

Each table of tables.sql becomes a DuckDB view over the lake's Parquet files, with the DDL's
column list and types and the partition columns year, month, day and hour read from the folder names;
the views of tables.sql (CREATE OR REPLACE VIEW, e.g. prediction_answers) are created over them,
text unchanged. Then the named queries run, text unchanged, their `?` parameters bound to the
defaults of their `-- param:` lines or to --param values.

    pip install duckdb
    python3 infra/athena/duckdb_lake.py --lake var/lake                     # every query
    python3 infra/athena/duckdb_lake.py --lake var/lake --query freshness_gaps --param min_gap_minutes=5
    python3 infra/athena/duckdb_lake.py --lake var/lake --view prediction_answers   # a view's rows
    python3 infra/athena/duckdb_lake.py --lake var/lake --json              # for programs
    python3 infra/athena/duckdb_lake.py --lake var/lake --sql               # the views, for a duckdb shell

Used by lake/tests/athena.rs, which checks every query's numbers on a known history.
"""

import argparse
import datetime
import decimal
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITION_KEYS = ("year", "month", "day", "hour")
SIMPLE_TYPES = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


def duckdb_type(athena_type):
    t = athena_type.strip().lower()
    m = re.fullmatch(r"array<(.+)>", t)
    if m:
        return duckdb_type(m.group(1)) + "[]"
    if t in SIMPLE_TYPES:
        return SIMPLE_TYPES[t]
    raise SystemExit(f"tables.sql: no DuckDB type for Athena type {athena_type!r}")


def split_top_level(s):
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "(<":
            depth += 1
        elif c in ")>":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return [p for p in parts if p]


def parse_tables(text):
    """{table: [(column, athena type)]} of every CREATE EXTERNAL TABLE."""
    text = "\n".join(re.sub(r"--.*$", "", line) if "'" not in line else line for line in text.splitlines())
    tables = {}
    pattern = re.compile(
        r"CREATE\s+EXTERNAL\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:\S+\.)?(\w+)\s*\((.*?)\)\s*PARTITIONED\s+BY",
        re.S | re.I,
    )
    for m in pattern.finditer(text):
        cols = []
        for col in split_top_level(m.group(2)):
            name, typ = col.split(None, 1)
            cols.append((name.strip("`"), typ.strip()))
        tables[m.group(1)] = cols
    if not tables:
        raise SystemExit("tables.sql: no CREATE EXTERNAL TABLE found")
    return tables


def parse_views(text):
    """[(view, select)] of every CREATE [OR REPLACE] VIEW, in file order; the view's database
    qualifier (${database}.) is dropped: DuckDB has one."""
    text = "\n".join(re.sub(r"--.*$", "", line) if "'" not in line else line for line in text.splitlines())
    pattern = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:\S+\.)?(\w+)\s+AS\s+(.*?);", re.S | re.I)
    return [(m.group(1), m.group(2).strip()) for m in pattern.finditer(text)]


def parse_queries(text):
    """[(name, [(param, type, default)], sql)] in file order."""
    queries, block = [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("-- name:"):
            block = {"name": s[len("-- name:"):].strip(), "params": [], "sql": []}
            queries.append(block)
        elif block is None:
            continue
        elif s.startswith("-- param:"):
            name, typ, default = s[len("-- param:"):].split(None, 3)[:3]
            block["params"].append((name, typ, default))
        elif s.startswith("--"):
            continue
        else:
            block["sql"].append(line)
    return [(q["name"], q["params"], "\n".join(q["sql"]).strip().rstrip(";").strip()) for q in queries]


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def view_sql(lake, table, cols):
    select = ",\n  ".join(f"CAST({quote_ident(c)} AS {duckdb_type(t)}) AS {quote_ident(c)}" for c, t in cols)
    pattern = os.path.join(lake, table, "year=*", "month=*", "day=*", "hour=*", "*.parquet")
    if glob.glob(pattern):
        # union_by_name: a column that older files lack (the predictions' revision before
        # schema version 3) reads as NULL, as Athena reads Parquet by column name.
        keys = ", ".join(f"'{k}': 'INTEGER'" for k in PARTITION_KEYS)
        parts = ", ".join(quote_ident(k) for k in PARTITION_KEYS)
        path = pattern.replace("'", "''")
        return (
            f"CREATE OR REPLACE VIEW {quote_ident(table)} AS SELECT\n  {select},\n  {parts}\n"
            f"FROM read_parquet('{path}', hive_partitioning = true, hive_types = {{{keys}}}, "
            "union_by_name = true)"
        )
    # No file yet: an empty view with the same columns, so the queries still run.
    parts = ", ".join(f"CAST(NULL AS INTEGER) AS {quote_ident(k)}" for k in PARTITION_KEYS)
    nulls = ",\n  ".join(f"CAST(NULL AS {duckdb_type(t)}) AS {quote_ident(c)}" for c, t in cols)
    return f"CREATE OR REPLACE VIEW {quote_ident(table)} AS SELECT\n  {nulls},\n  {parts}\nWHERE false"


def param_value(typ, text):
    typ = typ.lower()
    if typ in ("integer", "int", "bigint"):
        return int(text)
    if typ in ("double", "float", "real"):
        return float(text)
    return text


def plain(v):
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default="var/lake", help="the local lake directory, <data_dir>/lake (default: var/lake)")
    ap.add_argument("--tables", default=os.path.join(HERE, "tables.sql"))
    ap.add_argument("--queries", default=os.path.join(HERE, "queries.sql"))
    ap.add_argument("--query", action="append", default=[], help="run only this named query (repeatable)")
    ap.add_argument("--param", action="append", default=[], help="name=value, overriding a default")
    ap.add_argument("--view", action="append", default=[], help="print this view's rows instead of the queries (repeatable)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--sql", action="store_true", help="print the views' SQL and stop")
    args = ap.parse_args()

    with open(args.tables, encoding="utf-8") as f:
        ddl = f.read()
    tables, athena_views = parse_tables(ddl), parse_views(ddl)
    with open(args.queries, encoding="utf-8") as f:
        queries = parse_queries(f.read())
    lake = os.path.abspath(args.lake)
    if not args.sql and not os.path.isdir(lake):
        raise SystemExit(
            f"no lake at {args.lake}: run `bikeshare up` or `bikeshare process` first, "
            "or pass --lake <data_dir>/lake"
        )
    if not args.sql and not glob.glob(os.path.join(lake, "*", "**", "*.parquet"), recursive=True):
        raise SystemExit(f"the lake at {args.lake} holds no Parquet file yet: nothing to query")
    views = [view_sql(lake, t, cols) for t, cols in tables.items()]
    views += [f"CREATE OR REPLACE VIEW {quote_ident(v)} AS\n{select}" for v, select in athena_views]
    if args.sql:
        print(";\n\n".join(views) + ";")
        return 0

    overrides = {}
    for p in args.param:
        if "=" not in p:
            raise SystemExit(f"--param {p!r}: use name=value")
        k, v = p.split("=", 1)
        overrides[k] = v
    names = [q[0] for q in queries]
    for wanted in args.query:
        if wanted not in names:
            raise SystemExit(f"no query named {wanted!r}; the queries: {', '.join(names)}")
    view_names = [v for v, _ in athena_views]
    for wanted in args.view:
        if wanted not in view_names:
            raise SystemExit(f"no view named {wanted!r}; the views: {', '.join(view_names)}")

    try:
        import duckdb  # only needed from here on
    except ImportError:
        raise SystemExit(
            "this script needs the Python package duckdb: python3 -m pip install duckdb"
        ) from None

    con = duckdb.connect(":memory:")
    for v in views:
        con.execute(v)
    results = []
    for name in args.view:
        cur = con.execute(f"SELECT * FROM {quote_ident(name)}")
        columns = [d[0] for d in cur.description]
        rows = [[plain(v) for v in row] for row in cur.fetchall()]
        results.append({"name": name, "params": {}, "columns": columns, "rows": rows})
    for name, params, sql in queries:
        if args.view or (args.query and name not in args.query):
            continue
        values = [param_value(t, overrides.get(p, d)) for p, t, d in params]
        cur = con.execute(sql, values)
        columns = [d[0] for d in cur.description]
        rows = [[plain(v) for v in row] for row in cur.fetchall()]
        results.append({"name": name, "params": dict(zip([p for p, _, _ in params], values)), "columns": columns, "rows": rows})

    if args.json:
        json.dump({"views" if args.view else "queries": results}, sys.stdout)
        print()
        return 0
    for r in results:
        print(f"== {r['name']} {r['params'] or ''}")
        print("\t".join(r["columns"]))
        for row in r["rows"]:
            print("\t".join("" if v is None else str(v) for v in row))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
