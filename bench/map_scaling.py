"""How `zart.map` scales with its number of items: it must be linear.

    python -m bench.map_scaling 500 1000 2000

For each N, starts one workflow that maps a no-op step over N items (a window of 4, so that
branches are claimed a few at a time, as with a slow step) on one in-process
worker (concurrency 100, batch 50) against a fresh database, and prints one JSON line with the time
from `zart.start` to the result. Each branch claim must load only its own step's rows, so the time
per item stays flat as N grows (it grew with N, about N^2 in all, when every branch claim loaded the
whole history).
"""

from __future__ import annotations

import sys
import time
import uuid

import orjson
import psycopg
from psycopg import conninfo

import zart
from bench.throughput import server_url
from zart.schema import migrate


@zart.step("bench-map-item")
async def item(i: int) -> int:
    return i * i


@zart.workflow("bench-map")
async def mapped(n: int) -> int:
    return sum(await zart.map(item, list(range(n)), concurrency=4))


def run(n: int) -> dict:
    server = server_url()
    name = f"zart_bench_map_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(server)
    params["dbname"] = name
    url = conninfo.make_conninfo(**params)
    try:
        migrate(url)
        with zart.Worker(url, concurrency=100, batch=50, lease="30s", poll_interval="0.5s"):
            began = time.perf_counter()
            result = zart.start(mapped, n, database_url=url).result(timeout=600)
            seconds = time.perf_counter() - began
        assert result == sum(i * i for i in range(n))
        return {"items": n, "seconds": round(seconds, 3), "ms_per_item": round(1000 * seconds / n, 3)}
    finally:
        from zart.pools import close_pools

        close_pools()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    for n in [int(arg) for arg in sys.argv[1:]] or [500, 1000, 2000]:
        print(orjson.dumps(run(n)).decode(), flush=True)


if __name__ == "__main__":
    main()
