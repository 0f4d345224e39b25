"""What a psycopg 3 client expects of Strata's SQL gateway.

Run by the end-to-end test `gateway::psycopg_*` against a real gateway:
    python3 psycopg_check.py PORT TABLE_DIR EXPECTED_ROWS [PASSWORD]
TABLE_DIR holds Parquet files of TPC-H's `nation` table. Exits non-zero
(with the failing check) on the first thing that is not as PostgreSQL
would have it.
"""

import datetime
import decimal
import sys

import psycopg
from psycopg import errors

port, table_dir, expected_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
password = sys.argv[4] if len(sys.argv) > 4 else None
dsn = f"host=127.0.0.1 port={port} dbname=strata user=analyst application_name=check"
if password is not None:
    dsn += f" password={password}"


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


with psycopg.connect(dsn, autocommit=True) as conn:
    cur = conn.cursor()

    # What clients read at connect time.
    cur.execute("select version()")
    version = cur.fetchone()[0]
    if not version.startswith("PostgreSQL 14"):
        sys.exit(f"version(): {version!r}")
    cur.execute("select current_schema(), current_database()")
    check("current schema and database", cur.fetchone(), ("public", "strata"))
    cur.execute("show standard_conforming_strings")
    check("standard_conforming_strings", cur.fetchone(), ("on",))
    cur.execute("show application_name")
    check("application_name from the startup", cur.fetchone(), ("check",))
    cur.execute("set application_name = 'renamed'")
    cur.execute("show application_name")
    check("application_name after SET", cur.fetchone(), ("renamed",))

    # Types, in text and in binary.
    row_sql = (
        "select 1::int4, 2::int8, 1.5::float8, 'x'::text, true, null::int4, "
        "date '2024-01-02', timestamp '2024-01-02 03:04:05', 12.34::decimal(10,2)"
    )
    want = (
        1,
        2,
        1.5,
        "x",
        True,
        None,
        datetime.date(2024, 1, 2),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        decimal.Decimal("12.34"),
    )
    cur.execute(row_sql)
    check("types (text)", cur.fetchone(), want)
    with conn.cursor(binary=True) as bcur:
        bcur.execute(row_sql)
        check("types (binary)", bcur.fetchone(), want)

    # Bound parameters (the extended protocol), prepared statements.
    cur.execute("select %s::int8 + 1, %s::text", (41, "a"))
    check("bound parameters", cur.fetchone(), (42, "a"))
    for i in range(3):
        cur.execute("select %s::int8 * 2", (i,), prepare=True)
        check("prepared statement", cur.fetchone(), (i * 2,))

    # A table over files: its rows come from the cluster's executors.
    cur.execute(
        f"create external table nation stored as parquet location '{table_dir}'"
    )
    cur.execute("select count(*) from nation")
    check("rows of nation", cur.fetchone(), (expected_rows,))
    cur.execute("select n_name from nation where n_nationkey = %s", (7,))
    check("a row by a bound key", cur.fetchone(), ("GERMANY",))
    cur.execute(
        "select table_name from information_schema.tables "
        "where table_schema = 'public' order by table_name"
    )
    check("information_schema.tables", cur.fetchall(), [("nation",)])
    cur.execute("select tablename from pg_catalog.pg_tables where schemaname = 'public'")
    check("pg_tables", cur.fetchall(), [("nation",)])
    cur.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_name = 'nation' order by ordinal_position"
    )
    check("columns of nation", [c for c, _ in cur.fetchall()],
          ["n_nationkey", "n_name", "n_regionkey", "n_comment"])

    # Transactions: BEGIN and COMMIT are answered as PostgreSQL does.
    with conn.transaction():
        cur.execute("select 1")
        check("inside a transaction", conn.info.transaction_status.name, "INTRANS")
    check("after it", conn.info.transaction_status.name, "IDLE")

    # Errors carry the SQLSTATE clients branch on, and the session lives on.
    for sql, error in [
        ("select * from no_such_table", errors.UndefinedTable),
        ("selec 1", errors.SyntaxError),
        ("show no_such_setting", errors.UndefinedObject),
    ]:
        try:
            cur.execute(sql)
            sys.exit(f"{sql!r} did not fail")
        except error:
            pass
    cur.execute("select 2")
    check("after errors", cur.fetchone(), (2,))

print("psycopg: all checks passed")
