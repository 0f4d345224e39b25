"""Reads a large result from Strata's SQL gateway a little at a time.

Usage: stream_check.py PG_PORT FLIGHT_ADDR HTTP_ADDR ROWS SQL
Through an asyncpg cursor (PostgreSQL's wire: each fetch executes a few
rows of a suspended portal) and the ADBC Flight SQL driver (a record batch
reader), reads the first rows of SQL, then asks
the gateway's HTTP API for its running queries: the query must still be
listed with its job, since its rows stream from the cluster as the client
reads them. Then reads the rest (ROWS rows in all) and waits for the
listing to empty. Prints what it saw.
"""

import asyncio
import faulthandler
import json
import os
import sys
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import asyncpg

pg_port, flight_addr, http_addr, rows, sql = sys.argv[1:6]
rows = int(rows)
faulthandler.dump_traceback_later(50, exit=True)


def fail(message):
    """Exits at once: closing a connection mid-result would wait for it."""
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


def running():
    with urllib.request.urlopen(f"http://{http_addr}/api/v1/queries", timeout=10) as r:
        return json.load(r)


def listed_with_job(what):
    queries = running()
    mine = [q for q in queries if q.get("sql", "").strip() == sql.strip()]
    if len(mine) != 1 or not mine[0].get("job"):
        fail(f"{what}: the query is not listed with a job while it streams: {queries}")
    print(f"{what}: listed as job {mine[0]['job']}")


def unlisted(what):
    deadline = time.monotonic() + 20
    while any(q.get("sql", "").strip() == sql.strip() for q in running()):
        if time.monotonic() > deadline:
            fail(f"{what}: still listed after its last row: {running()}")
        time.sleep(0.05)


def via_asyncpg():
    """A cursor: each fetch is an Execute of a few rows of a suspended portal."""

    async def run():
        conn = await asyncpg.connect(
            host="127.0.0.1", port=pg_port, user="strata", database="strata", password="x"
        )
        async with conn.transaction():
            cursor = await conn.cursor(sql)
            first = await cursor.fetch(1000)
            listed_with_job("asyncpg")
            n = len(first)
            while batch := await cursor.fetch(50000):
                n += len(batch)
        await conn.close()
        return n

    n = asyncio.run(run())
    if n != rows:
        fail(f"asyncpg: {n} rows, want {rows}")
    print(f"asyncpg: {n} rows")
    unlisted("asyncpg")


def via_adbc():
    conn = flight_sql.connect(
        f"grpc://{flight_addr}",
        db_kwargs={"username": "strata", "password": "x"},
        autocommit=True,
    )
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        first = reader.read_next_batch()
        listed_with_job("adbc")
        n = first.num_rows + sum(b.num_rows for b in reader)
        if n != rows:
            fail(f"adbc: {n} rows, want {rows}")
        print(f"adbc: {n} rows")
    unlisted("adbc")


via_asyncpg()
via_adbc()
sys.stdout.flush()
os._exit(0)
