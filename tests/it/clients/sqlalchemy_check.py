"""What SQLAlchemy (with psycopg 3) and pandas expect of Strata's gateway:
connecting, queries with bound parameters into DataFrames, and the
schemas, tables and columns SQLAlchemy's inspector reflects.

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
columns = inspector.get_columns("nation")
check("reflected columns", [c["name"] for c in columns],
      ["n_nationkey", "n_name", "n_regionkey", "n_comment"])
check("reflected types", [type(c["type"]).__name__ for c in columns],
      ["BIGINT", "TEXT", "BIGINT", "TEXT"])
# A Table autoloaded reflects its keys, indexes, constraints and options
# too (unnest() and generate_subscripts() of pg_index's key vectors,
# pg_class.reloptions, current_setting()): a gateway table has none.
table = sa.Table("nation", sa.MetaData(), autoload_with=engine)
check("autoloaded columns", [c.name for c in table.columns],
      ["n_nationkey", "n_name", "n_regionkey", "n_comment"])
check("primary key", list(table.primary_key.columns), [])
check("indexes", table.indexes, set())
check("foreign keys", inspector.get_foreign_keys("nation"), [])
check("unique constraints", inspector.get_unique_constraints("nation"), [])
check("check constraints", inspector.get_check_constraints("nation"), [])
check("table comment", inspector.get_table_comment("nation"), {"text": None})
with engine.connect() as conn:
    check("current_setting",
          conn.execute(sa.text("SELECT current_setting('default_table_access_method')"))
          .scalar(), "heap")
    rows = pd.read_sql_table("nation", conn)
    check("read_sql_table", len(rows), 25)
print("sqlalchemy: all checks passed")
