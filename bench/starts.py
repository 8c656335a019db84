"""Starts per second: one at a time, from many tasks, in bulk; and what bulk starting does end to end.

    python -m bench.starts                    # both parts at the sizes of docs/benchmarks.md
    python -m bench.starts --part pure        # start cost only, no worker
    python -m bench.starts --part end-to-end --workflows 3000 --procs 2

Pure start cost (no worker runs, so nothing but the start is measured), each case on a fresh
database, after one warm-up start that opens the client pool:

- `start`: `zart.start` called sequentially from one thread (one transaction per start);
- `astart x64`: `zart.astart` from 64 concurrent trio tasks in one process;
- `start_many 1x10000`: `zart.start_many` of 10,000 inputs in one call (one statement);
- `start_many 10x1000`: the same 10,000 through 10 calls of 1,000.

Every case then counts the execution rows and workflow tasks it created: a start that wrote nothing
would otherwise look fast. Each also reports the CPU time per start of the client process and of its
database sessions (`--prefill N` puts N finished executions in the tables first: a start's plan
can depend on the table's size).

End to end: W three-step workflows started by one `start_many` or by `astart` from 64 tasks, against
a real `zart supervise --procs P` already claiming, timed by the client from the first start to the
last result in its hands (`aresult` from 64 tasks); `db_seconds` is the database's view, from the
earliest `created_at` to the latest `finished_at`.

An engine without `start_many` (before queues) reports those cases as "n/a", so the same script runs
against both versions (bench/versus.py). Prints a table, or one JSON line per case with `--json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import orjson
import psycopg
import trio

import zart
from zart.pools import close_pools

from . import apps
from .harness import CpuMeter, checkout, per_workflow, supervise, table, wait_for_completed
from .throughput import FreshDatabase, prefill_finished, server_url

TASKS = 64  # concurrent astart callers
STEPS = 3
HAS_START_MANY = hasattr(zart, "start_many")


def _sequential(url: str, count: int) -> None:
    for _ in range(count):
        zart.start(apps.bench_steps, STEPS, database_url=url)


def _concurrent(url: str, count: int, tasks: int = TASKS) -> None:
    """`count` astarts shared by `tasks` trio tasks, each starting one after another."""

    async def main() -> None:
        left = count

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await zart.astart(apps.bench_steps, STEPS, database_url=url)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(caller)

    trio.run(main)


def _concurrent_to_results(url: str, count: int, tasks: int = TASKS) -> None:
    """As a user's async service would: `tasks` trio tasks start `count` executions between them with
    `zart.astart`, then each awaits the results of the ones it started (`aresult`)."""

    async def main() -> None:
        left = count

        async def caller() -> None:
            nonlocal left
            mine = []
            while left > 0:
                left -= 1
                mine.append(await zart.astart(apps.bench_steps, STEPS, database_url=url))
            for handle in mine:
                await handle.aresult(timeout=600)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(caller)

    trio.run(main)


def _bulk_to_results(url: str, count: int, tasks: int = TASKS) -> None:
    """One `start_many` of `count`, then `tasks` trio tasks await the results between them."""
    handles = zart.start_many(apps.bench_steps, [STEPS] * count, database_url=url)

    async def main() -> None:
        async def waiter(share: list[zart.ExecutionHandle]) -> None:
            for handle in share:
                await handle.aresult(timeout=600)

        async with trio.open_nursery() as nursery:
            for index in range(tasks):
                nursery.start_soon(waiter, handles[index::tasks])

    trio.run(main)


def _bulk(url: str, count: int, calls: int) -> None:
    per_call, extra = divmod(count, calls)
    for call in range(calls):
        size = per_call + (call < extra)
        zart.start_many(apps.bench_steps, [STEPS] * size, database_url=url)


def _pure_cases(counts: dict[str, int]) -> list[tuple[str, int, Callable[[str, int], None] | None]]:
    """The pure cases; a count of 0 leaves its case out."""
    bulk = counts["bulk"]
    cases: list[tuple[str, int, Callable[[str, int], None] | None]] = [
        ("start", counts["sequential"], _sequential),
        (f"astart x{TASKS}", counts["concurrent"], _concurrent),
        (f"start_many 1x{bulk}", bulk, (lambda url, n: _bulk(url, n, 1)) if HAS_START_MANY else None),
        (
            f"start_many 10x{bulk // 10}",
            bulk,
            (lambda url, n: _bulk(url, n, 10)) if HAS_START_MANY else None,
        ),
    ]
    return [case for case in cases if case[1] > 0]


def _count(url: str) -> tuple[int, int]:
    """(execution rows, workflow tasks): no worker runs, so every start leaves one of each."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM zart_execution_runs),"
            " (SELECT count(*) FROM zart_tasks WHERE kind = 'workflow')"
        ).fetchone()


def pure(
    case: str,
    count: int,
    how: Callable[[str, int], None] | None,
    database_url: str | None = None,
    prefill: int = 0,
) -> dict[str, Any]:
    """One case of pure start cost, on a fresh database (with `prefill` finished executions in it)
    unless `database_url` names one (the smoke test shares one between cases); the rows it created
    are counted afterwards. Also the CPU time per start of this process (the client) and of its
    database sessions: what a start costs each side, whatever else the machine is doing."""
    row: dict[str, Any] = {"benchmark": "starts", "case": case, "engine": checkout(), "starts": count}
    if how is None:
        return {**row, "seconds": None, "starts_per_s": None, "rows": None, "note": "n/a: no start_many"}
    with ExitStack() as stack:
        if database_url is None:
            url = stack.enter_context(FreshDatabase(server_url())).url
            if prefill:
                prefill_finished(url, prefill)
        else:
            url = database_url
        stack.callback(close_pools, url)
        zart.start(apps.bench_steps, STEPS, database_url=url)  # the pool opens outside the timing
        before = _count(url)
        meter = CpuMeter(stack.enter_context(psycopg.connect(url, autocommit=True)), os.getpid())
        meter.start()
        began = time.perf_counter()
        how(url, count)
        seconds = time.perf_counter() - began
        client_cpu, database_cpu = meter.stop()
        after = _count(url)
    executions, tasks = after[0] - before[0], after[1] - before[1]
    if executions != count or tasks != count:
        raise RuntimeError(f"{case}: {executions} executions and {tasks} tasks for {count} starts")
    return {
        **row,
        "seconds": round(seconds, 4),
        "starts_per_s": round(count / seconds, 1),
        "rows": executions,
        "client_cpu_us_per_start": None if client_cpu is None else round(1e6 * client_cpu / count, 1),
        "db_cpu_us_per_start": None if database_cpu is None else round(1e6 * database_cpu / count, 1),
        "finished_executions_already_in_tables": prefill,
    }


def end_to_end(how: str, workflows: int, procs: int, concurrency: int, batch: int) -> dict[str, Any]:
    """W three-step workflows started by `how` against a supervisor that is already claiming."""
    row: dict[str, Any] = {
        "benchmark": "starts-end-to-end",
        "case": f"{how} {workflows} x {STEPS} steps",
        "engine": checkout(),
        "workflows": workflows,
        "procs": procs,
    }
    if how == "start_many" and not HAS_START_MANY:
        return {**row, "seconds": None, "workflows_per_s": None, "note": "n/a: no start_many"}
    with FreshDatabase(server_url()) as database:
        url = database.url
        try:
            with (
                supervise(url, procs, concurrency=concurrency, batch=batch) as supervisor,
                psycopg.connect(url, autocommit=True) as conn,
            ):
                zart.start(apps.bench_steps, STEPS, database_url=url).result(60)  # warm: pools, listener
                conn.execute("DELETE FROM zart_execution_runs")
                meter = CpuMeter(conn, supervisor.pid)
                meter.start()
                began = time.perf_counter()
                if how == "start_many":
                    _bulk_to_results(url, workflows)
                else:
                    _concurrent_to_results(url, workflows)
                wall = time.perf_counter() - began
                close_pools(url)  # the client's session ends: the meter counts the workers' only
                wait_for_completed(url, workflows, supervisor, timeout=600)
                worker_cpu, database_cpu = meter.stop()
                first, last, latencies = conn.execute(
                    "SELECT min(created_at), max(finished_at),"
                    " array_agg(extract(epoch FROM finished_at - created_at)::float8)"
                    " FROM zart_execution_runs"
                ).fetchone()
        finally:
            close_pools(url)
    seconds = (last - first).total_seconds()
    return {
        **row,
        # as the user sees it: from the first start to the last result in the client's hands
        "seconds": round(wall, 3),
        "workflows_per_s": round(workflows / wall, 1),
        # as the database saw it: from the first execution's creation to the last one's finish
        "db_seconds": round(seconds, 3),
        "p50_latency_ms": round(1000 * statistics.median(latencies), 1),
        "worker_cpu_ms_per_workflow": per_workflow(worker_cpu, workflows),
        "db_cpu_ms_per_workflow": per_workflow(database_cpu, workflows),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["pure", "end-to-end", "all"], default="all")
    parser.add_argument("--sequential", type=int, default=2000, help="starts of the sequential case")
    parser.add_argument("--concurrent", type=int, default=5000, help="starts of the astart case")
    parser.add_argument("--bulk", type=int, default=10000, help="starts of the start_many cases (0: none)")
    parser.add_argument(
        "--prefill", type=int, default=0, help="finished executions in the tables before the pure cases"
    )
    parser.add_argument("--workflows", type=int, default=3000, help="workflows of the end-to-end cases")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=500, help="per worker process")
    parser.add_argument("--batch", type=int, default=200, help="tasks claimed per query")
    parser.add_argument("--json", action="store_true", help="one JSON line per case instead of a table")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        if args.json:
            print(orjson.dumps(row).decode(), flush=True)

    if args.part in ("pure", "all"):
        counts = {"sequential": args.sequential, "concurrent": args.concurrent, "bulk": args.bulk}
        for case, count, how in _pure_cases(counts):
            report(pure(case, count, how, prefill=args.prefill))
    if args.part in ("end-to-end", "all"):
        for how in ("start_many", f"astart x{TASKS}"):
            report(end_to_end(how, args.workflows, args.procs, args.concurrency, args.batch))
    if not args.json:
        starts = [r for r in rows if r["benchmark"] == "starts"]
        if starts:
            columns = ["case", "starts", "seconds", "starts_per_s", "rows"]
            print(table(starts, [*columns, "client_cpu_us_per_start", "db_cpu_us_per_start", "engine"]))
        ends = [r for r in rows if r["benchmark"] == "starts-end-to-end"]
        if ends:
            print()
            print(table(ends, ["case", "seconds", "workflows_per_s", "p50_latency_ms", "engine"]))


if __name__ == "__main__":
    main()
