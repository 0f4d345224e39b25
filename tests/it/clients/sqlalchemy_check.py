"""What SQLAlchemy (with psycopg 3) and pandas expect of Strata's gateway:
connecting, queries with bound parameters into DataFrames, and the
schemas and tables SQLAlchemy's inspector lists.

Run by the end-to-end test `gateway::sqlalchemy_*`:
    python3 sqlalchemy_check.py PORT NATION_DIR
Exits non-zero with the failing check.
"""

import sys

import pandas as pd
import sqlalchemy as sa

port, nation_dir = sys.argv[1], sys.argv[2]
engine = sa.create_engine(f"postgresql+psycopg://strata@127.0.0.1:{port}/strata")


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


with engine.connect() as conn:
    # SQLAlchemy's own connect-time queries ran; the version parsed.
    check("server version", engine.dialect.server_version_info[:1], (14,))
    conn.execute(
        sa.text(f"create external table nation stored as parquet location '{nation_dir}'")
    )
    conn.commit()
    df = pd.read_sql("select n_nationkey, n_name from nation order by n_nationkey", conn)
    check("rows", len(df), 25)
    check("a name", df.iloc[7]["n_name"], "GERMANY")
    check("key type", str(df["n_nationkey"].dtype), "int64")
    df = pd.read_sql(
        sa.text("select n_name from nation where n_regionkey = :r order by n_name"),
        conn,
        params={"r": 3},
    )
    check("bound parameter", list(df["n_name"]),
          ["FRANCE", "GERMANY", "ROMANIA", "RUSSIA", "UNITED KINGDOM"])

# Reflection reads pg_catalog.
inspector = sa.inspect(engine)
check("schemas", "public" in inspector.get_schema_names(), True)
check("tables", inspector.get_table_names(), ["nation"])
# Column reflection (`get_columns`, `autoload_with`) is not there yet: its
# query needs json_build_object, pg_get_serial_sequence and correlated
# subqueries in CASE that the gateway does not plan.
print("sqlalchemy: all checks passed")
