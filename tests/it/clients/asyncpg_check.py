"""What asyncpg (extended protocol only, binary results) expects of
Strata's gateway.

Run by the end-to-end test `gateway::asyncpg_*`:
    python3 asyncpg_check.py PORT NATION_DIR
Exits non-zero with the failing check.
"""

import asyncio
import datetime
import decimal
import sys

import asyncpg

port, nation_dir = int(sys.argv[1]), sys.argv[2]


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="strata", database="strata")
    await conn.execute(f"create external table nation stored as parquet location '{nation_dir}'")
    row = await conn.fetchrow(
        "select 1::int4 as a, 2::int8 as b, 1.5::float8 as c, 'x'::text as d, true as e, "
        "null::int4 as f, date '2024-01-02' as g, "
        "timestamp '2024-01-02 03:04:05' as h, 12.34::decimal(10,2) as i"
    )
    check("types", tuple(row.values()), (
        1, 2, 1.5, "x", True, None, datetime.date(2024, 1, 2),
        datetime.datetime(2024, 1, 2, 3, 4, 5), decimal.Decimal("12.34"),
    ))
    check("a bound int8", await conn.fetchval("select $1::int8 + 1", 41), 42)
    name = await conn.fetchval("select n_name from nation where n_nationkey = $1::int8", 7)
    check("a row by a bound key", name, "GERMANY")
    statement = await conn.prepare("select count(*) from nation where n_regionkey = $1::int8")
    check("a prepared statement", [await statement.fetchval(r) for r in range(5)], [5] * 5)
    try:
        await conn.fetch("select * from no_such_table")
        sys.exit("a missing table did not fail")
    except asyncpg.exceptions.UndefinedTableError:
        pass
    await conn.close()
    print("asyncpg: all checks passed")


asyncio.run(main())
