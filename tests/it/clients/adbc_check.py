"""What an ADBC Flight SQL client expects of Strata's SQL gateway.

Run by the end-to-end test `gateway::adbc_*` against a real gateway:
    python3 adbc_check.py URI PASSWORD TPCH_JSON OUT_DIR
TPCH_JSON maps each TPC-H query number to its statements (the tables are
already made); the result of each query's select is written to
OUT_DIR/qN.arrow (Arrow IPC) for the test to compare with DataFusion's.
Exits non-zero (with the failing check) on the first thing that is not as
a Flight SQL server should have it.
"""

import datetime
import decimal
import json
import os
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.ipc

uri, password, tpch_json, out_dir = sys.argv[1:5]


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def connect(pw=password):
    return flight_sql.connect(
        uri, db_kwargs={"username": "analyst", "password": pw}, autocommit=True
    )


def fails(what, run, *fragments):
    """`run` must raise an error whose text holds every fragment."""
    try:
        run()
    except Exception as e:  # the driver's own error classes
        text = str(e)
        for f in fragments:
            if f not in text:
                sys.exit(f"{what}: the error {text!r} lacks {f!r}")
        return e
    sys.exit(f"{what}: no error")


# A wrong password is refused at the handshake.
fails(
    "a wrong password",
    lambda: connect("wrong").cursor().execute("select 1"),
    "UNAUTHENTICATED",
)

with connect() as conn:
    cur = conn.cursor()

    # What the server says of itself (SqlInfo).
    info = conn.adbc_get_info()
    check("vendor name", info.get("vendor_name"), "Strata")
    if not info.get("vendor_version"):
        sys.exit(f"no vendor version in {info!r}")

    # Types come back as Arrow types.
    cur.execute(
        "select 1::int4 as i, 2::int8 as l, 1.5::float8 as f, 'x'::text as t, true as b, "
        "null::int4 as n, date '2024-01-02' as d, timestamp '2024-01-02 03:04:05' as ts, "
        "12.34::decimal(10,2) as dec"
    )
    table = cur.fetch_arrow_table()
    check(
        "column types",
        [str(t) for t in table.schema.types],
        ["int32", "int64", "double", "string", "bool", "int32", "date32[day]",
         "timestamp[ns]", "decimal128(10, 2)"],
    )
    check(
        "values",
        table.to_pylist()[0],
        {"i": 1, "l": 2, "f": 1.5, "t": "x", "b": True, "n": None,
         "d": datetime.date(2024, 1, 2), "ts": datetime.datetime(2024, 1, 2, 3, 4, 5),
         "dec": decimal.Decimal("12.34")},
    )

    # Bound parameters through a prepared statement, run twice.
    for n in (41, 99):
        cur.execute("select $1::int8 + 1 as n, $2::text as s", parameters=(n, "p"))
        check(f"bound parameter {n}", cur.fetchall(), [(n + 1, "p")])

    # DDL and its use; an unknown table is a clear error.
    cur.execute("create view answers as select 42 as answer")
    cur.execute("select answer from answers")
    check("a view made through Flight SQL", cur.fetchall(), [(42,)])
    fails("an unknown table", lambda: cur.execute("select * from nope"), "nope", "42P01")
    fails("bad SQL", lambda: cur.execute("selec 1"), "42601")

    # Bulk ingest: create, append, a refused create, replace.
    people = pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                       "name": pa.array(["ada", "bob", None], pa.string())})
    check("ingest create", cur.adbc_ingest("people", people, mode="create"), 3)
    check("ingest append", cur.adbc_ingest("people", people, mode="append"), 3)
    cur.execute("select count(*) as c, count(name) as named from people")
    check("rows after append", cur.fetchall(), [(6, 4)])
    fails("ingest create of an existing table",
          lambda: cur.adbc_ingest("people", people, mode="create"), "already exists")
    check("ingest replace", cur.adbc_ingest("people", people, mode="replace"), 3)
    cur.execute("select sum(id) as s from people")
    check("rows after replace", cur.fetchall(), [(6,)])

    # get_objects: catalogs, schemas, tables and their columns.
    objects = conn.adbc_get_objects(depth="all", catalog_filter="strata").read_all().to_pylist()
    check("catalogs", [c["catalog_name"] for c in objects], ["strata"])
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    for want in ("public", "pg_catalog"):
        if want not in schemas:
            sys.exit(f"get_objects lacks schema {want}: {sorted(schemas)}")
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    for want, kind in (("lineitem", "TABLE"), ("people", "TABLE"), ("answers", "VIEW")):
        if want not in tables:
            sys.exit(f"get_objects lacks table {want}: {sorted(tables)}")
        check(f"{want}'s type", tables[want]["table_type"], kind)
    columns = [c["column_name"] for c in tables["people"]["table_columns"]]
    check("people's columns", columns, ["id", "name"])
    check("table types", sorted(conn.adbc_get_table_types()), ["LOCAL TEMPORARY", "TABLE", "VIEW"])
    schema = conn.adbc_get_table_schema("nation")
    check("nation's schema", schema.names, ["n_nationkey", "n_name", "n_regionkey", "n_comment"])

    # The 22 TPC-H queries; each select's rows go to OUT_DIR for the test.
    with open(tpch_json) as f:
        queries = json.load(f)
    for n, statements in sorted(queries.items(), key=lambda kv: int(kv[0])):
        result = None
        for statement in statements:
            cur.execute(statement)
            if statement.lstrip().lower().startswith("select"):
                result = cur.fetch_arrow_table()
        with pa.OSFile(os.path.join(out_dir, f"q{n}.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, result.schema) as writer:
                writer.write_table(result)

    # A cancel from another thread ends a long query; the next one runs.
    long_query = open(os.path.join(out_dir, "long.sql")).read()
    errors = []
    long_cur = conn.cursor()

    def run_long():
        try:
            long_cur.execute(long_query)
            long_cur.fetchall()
            errors.append(None)
        except Exception as e:
            errors.append(e)

    long_cur_thread = threading.Thread(target=run_long)
    long_cur_thread.start()
    # The test's side waits for the query to run as a job, then this
    # side cancels it: the test writes `running` when it sees the job.
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(out_dir, "running")):
        if time.monotonic() > deadline:
            sys.exit("the long query never ran as a job")
        time.sleep(0.05)
    started = time.monotonic()
    # The statement's cancel (its gRPC call is cancelled).
    long_cur.adbc_cancel()
    long_cur_thread.join(60)
    if long_cur_thread.is_alive():
        sys.exit("the long query did not end after its cancel")
    if errors[0] is None:
        sys.exit("the long query ended without an error after its cancel")
    print(f"cancel ended the query in {time.monotonic() - started:.2f}s: {errors[0]}")
    cur.execute("select count(*) as c from nation")
    check("a query after the cancel", cur.fetchall(), [(25,)])

print("ok")
