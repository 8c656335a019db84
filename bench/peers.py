"""Zart against DBOS: the same three-step workflow run end to end on each, on one PostgreSQL server.

    pip install -e '.[peers]'                 # DBOS, the optional `peers` extra
    python -m bench.peers --workflows 3000 --procs 2 [--rounds 3] [--json]

Each case runs on a fresh database of the same server, with P worker processes started (and
waited for) before the clock starts, and is timed by its caller from the first start to the last
result, as a user would see it:

- `zart start_many`: one `zart.start_many` of the W inputs against `zart supervise --procs P`,
  then `handle.result()` of each in turn.
- `zart astart x64`: the W inputs started one by one with `zart.astart` from 64 trio tasks, then
  the results as above.
- `dbos queue`: DBOS's way to run workflows in other processes: P processes each launch DBOS
  (`python -m bench.peers_dbos supervise`, one executor id each) and dequeue from one queue, which
  a `DBOSClient` fills with `client.enqueue` from 64 threads (DBOS has no bulk enqueue), then
  `handle.get_result()` of each in turn.
- `dbos start_workflow`: DBOS's in-process start: each of the P processes starts its share of the
  W workflows with `DBOS.start_workflow` and waits for their results; no queue, no client. The
  clock runs from the moment all P are told to go to the moment the last reports.

Every result is checked (input + 3). Also reported: the same span as the engine recorded it (first
creation to last end), the transactions PostgreSQL counted in the case's database per workflow,
and the CPU time per workflow of the worker processes and of the database's sessions, steadier
than the rates on a shared machine (bench/harness.py). Each case waits for an idle machine first;
the rounds alternate the order of the cases, and each ratio is taken within one round.

DBOS runs with its defaults (queue polled every second, no per-process limit: faster here than
tuned values, see docs/benchmarks.md), except the caller's `get_result` polling: every 10 ms, not
every second, so that waiting does not slow it. `--dbos-*` change them; the output shows them.
Without the `peers` extra, only Zart's cases run. Prints a table (medians of the rounds), or with
`--json` one JSON line per case and round, then one per case with the medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import orjson
import psycopg
import trio
from psycopg import conninfo

import zart
from zart.pools import close_pools
from zart.schema import migrate

from . import peer_apps
from .harness import (
    REPO_ROOT,
    CpuMeter,
    checkout,
    per_workflow,
    ready_process,
    supervise,
    table,
    wait_for_quiet,
)
from .throughput import server_url

TASKS = 64  # concurrent callers of the one-by-one starts, on both engines
ZART_CASES = ("zart start_many", f"zart astart x{TASKS}")
DBOS_CASES = ("dbos queue", "dbos start_workflow")
CASES = (*ZART_CASES, *DBOS_CASES)


def dbos_installed() -> bool:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def fresh_database(server: str, zart_schema: bool) -> Iterator[str]:
    """A database of the case's own (with Zart's schema or not), dropped at the end; its conninfo."""
    name = f"zart_peers_{uuid.uuid4().hex[:10]}"
    params = conninfo.conninfo_to_dict(server)
    params["dbname"] = name
    url = conninfo.make_conninfo(**params)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        if zart_schema:
            migrate(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlalchemy_url(url: str) -> str:
    """A psycopg conninfo as the postgresql:// URL DBOS takes (it connects through SQLAlchemy)."""
    from sqlalchemy.engine import URL

    params = conninfo.conninfo_to_dict(url)
    known = {key: params.pop(key, None) for key in ("user", "password", "host", "port", "dbname")}
    return URL.create(
        "postgresql",
        username=known["user"],
        password=known["password"],
        host=known["host"],
        port=int(known["port"]) if known["port"] else None,
        database=known["dbname"],
        query={key: str(value) for key, value in params.items()},
    ).render_as_string(hide_password=False)


def versions() -> dict[str, Any]:
    """What the figures were measured with."""
    with psycopg.connect(server_url(), autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    return {
        "zart": checkout(),
        "dbos": metadata.version("dbos") if dbos_installed() else None,
        "postgresql": server,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def versions_of(about: dict[str, Any]) -> dict[str, Any]:
    return {f"{key}_version" if key != "cpus" else key: value for key, value in about.items()}


def _row(
    case: str, workflows: int, procs: int, seconds: float, meter: tuple[float | None, float | None]
) -> dict[str, Any]:
    worker_cpu, database_cpu = meter
    return {
        "benchmark": "peers",
        "case": case,
        "workflows": workflows,
        "procs": procs,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(workflows / seconds, 1),
        "worker_cpu_ms_per_workflow": per_workflow(worker_cpu, workflows),
        "db_cpu_ms_per_workflow": per_workflow(database_cpu, workflows),
    }


def _check(case: str, inputs: list[int], results: list[Any]) -> int:
    """How many results are right (input + 3); raises unless all of them are."""
    if len(results) != len(inputs):
        raise RuntimeError(f"{case}: {len(results)} results for {len(inputs)} workflows")
    right = sum(result == n + 3 for n, result in zip(inputs, results, strict=True))
    if right != len(inputs):
        raise RuntimeError(f"{case}: {len(inputs) - right} wrong results of {len(inputs)}")
    return right


def _transactions(url: str, since: int | None = None) -> int:
    """Transactions committed or rolled back in the case's database (PostgreSQL's count, read from
    another database): the count now, or, with `since`, how many since then. The second reading
    comes once the case's sessions have closed (a session reports its counts when it ends, or at
    most once a second), a second later."""
    if since is not None:
        time.sleep(1.0)
    with psycopg.connect(server_url(), autocommit=True) as conn:
        total = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (conninfo.conninfo_to_dict(url)["dbname"],),
        ).fetchone()[0]
    return total if since is None else total - since


# -- Zart ------------------------------------------------------------------------------------------


def _astart_all(url: str, inputs: list[int], tasks: int = TASKS) -> list[zart.ExecutionHandle]:
    """The inputs started one by one by `tasks` trio tasks; the handles in input order."""
    handles: list[Any] = [None] * len(inputs)

    async def main() -> None:
        left = iter(range(len(inputs)))

        async def caller() -> None:
            for i in left:
                handles[i] = await zart.astart(peer_apps.add_three, inputs[i], database_url=url)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(caller)

    trio.run(main)
    return handles


def run_zart(case: str, workflows: int, procs: int, concurrency: int, batch: int) -> dict[str, Any]:
    inputs = list(range(workflows))
    with fresh_database(server_url(), zart_schema=True) as url:
        try:
            with (
                supervise(url, procs, app="bench.peer_apps", concurrency=concurrency, batch=batch) as workers,
                psycopg.connect(url, autocommit=True) as conn,
            ):
                meter = CpuMeter(conn, workers.pid)
                transactions = _transactions(url)
                meter.start()
                began = time.perf_counter()
                if case == "zart start_many":
                    handles = zart.start_many(peer_apps.add_three, inputs, database_url=url)
                else:
                    handles = _astart_all(url, inputs)
                results = [handle.result(timeout=600) for handle in handles]
                seconds = time.perf_counter() - began
                used = meter.stop()
                recorded = conn.execute(
                    "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8"
                    " FROM zart_execution_runs"
                ).fetchone()[0]
        finally:
            close_pools(url)
        transactions = _transactions(url, since=transactions)
    right = _check(case, inputs, results)
    return {
        **_row(case, workflows, procs, seconds, used),
        "recorded_seconds": round(recorded, 3),
        "transactions_per_workflow": round(transactions / workflows, 2),
        "engine": "zart",
        "right_results": right,
    }


# -- DBOS ------------------------------------------------------------------------------------------


@contextmanager
def dbos_workers(url: str, procs: int, local: int = 0) -> Iterator[subprocess.Popen[str]]:
    """`python -m bench.peers_dbos supervise`: P DBOS processes, yielded once all are launched."""
    from .peers_dbos import READY

    command = [sys.executable, "-m", "bench.peers_dbos", "supervise", "--url", url, "--procs", str(procs)]
    if local:
        command += ["--local", str(local)]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with ready_process(
        command, env, READY, procs, "the DBOS workers", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as process:
        yield process


def run_dbos(
    case: str,
    workflows: int,
    procs: int,
    polling: float = 1.0,
    worker_concurrency: int | None = None,
    result_polling: float = 0.01,
    enqueue_threads: int = TASKS,
) -> dict[str, Any]:
    from dbos import DBOS, DBOSClient, EnqueueOptions

    from . import peers_dbos

    inputs = list(range(workflows))
    with fresh_database(server_url(), zart_schema=False) as plain:
        url = sqlalchemy_url(plain)
        DBOS.migrate(url)
        settings: dict[str, Any] = {}
        if case == "dbos queue":
            client = DBOSClient(
                system_database_url=url,
                application_name=peers_dbos.APP,
                system_database_pool_size=enqueue_threads,
            )
            try:
                client.register_queue(
                    peers_dbos.QUEUE,
                    worker_concurrency=worker_concurrency,
                    polling_interval_sec=polling,
                    application_name=peers_dbos.APP,
                )
                options: EnqueueOptions = {
                    "queue_name": peers_dbos.QUEUE,
                    "workflow_name": peers_dbos.WORKFLOW,
                    "app_version": peers_dbos.VERSION,
                }
                with (
                    dbos_workers(url, procs) as workers,
                    psycopg.connect(plain, autocommit=True) as conn,
                    ThreadPoolExecutor(enqueue_threads) as threads,
                ):
                    meter = CpuMeter(conn, workers.pid)
                    transactions = _transactions(url)
                    meter.start()
                    began = time.perf_counter()
                    handles = list(threads.map(lambda n: client.enqueue(options, n), inputs))
                    results = [handle.get_result(polling_interval_sec=result_polling) for handle in handles]
                    seconds = time.perf_counter() - began
                    used = meter.stop()
                    spread, recorded = _per_executor(conn), _recorded_seconds(conn)
            finally:
                client.destroy()
            settings = {
                "queue_polling_s": polling,
                "worker_concurrency": worker_concurrency,
                "result_polling_s": result_polling,
                "enqueue_threads": enqueue_threads,
            }
            right = _check(case, inputs, results)
        else:
            with (
                dbos_workers(url, procs, local=workflows) as workers,
                psycopg.connect(plain, autocommit=True) as conn,
            ):
                assert workers.stdin is not None and workers.stdout is not None
                meter = CpuMeter(conn, workers.pid)
                transactions = _transactions(url)
                meter.start()
                began = time.perf_counter()
                workers.stdin.write("g" * procs)  # one byte for each worker
                workers.stdin.flush()
                reports = [orjson.loads(workers.stdout.readline()) for _ in range(procs)]
                seconds = time.perf_counter() - began
                used = meter.stop()
                spread, recorded = _per_executor(conn), _recorded_seconds(conn)
            done = sum(report["workflows"] for report in reports)
            wrong = sum(report["wrong"] for report in reports)
            if done != workflows or wrong:
                raise RuntimeError(f"{case}: {done} of {workflows} workflows done, {wrong} wrong results")
            right = done - wrong
        transactions = _transactions(url, since=transactions)
    return {
        **_row(case, workflows, procs, seconds, used),
        "recorded_seconds": round(recorded, 3),
        "transactions_per_workflow": round(transactions / workflows, 2),
        "engine": "dbos",
        "right_results": right,
        "per_process": spread,
        **settings,
    }


def _per_executor(conn: psycopg.Connection) -> str:
    """How many workflows each DBOS process ran (a queue without a per-process limit lets one
    process's poll take the whole backlog)."""
    rows = conn.execute(
        "SELECT count(*) FROM dbos.workflow_status WHERE name = 'peers_add_three' GROUP BY executor_id"
        " ORDER BY 1 DESC"
    ).fetchall()
    return "/".join(str(count) for (count,) in rows)


def _recorded_seconds(conn: psycopg.Connection) -> float:
    """From the first workflow's creation to the last one's end, as DBOS recorded them (in ms)."""
    return conn.execute(
        "SELECT ((max(updated_at) - min(created_at)) / 1000.0)::float8 FROM dbos.workflow_status"
        " WHERE name = 'peers_add_three'"
    ).fetchone()[0]


# -- The run ---------------------------------------------------------------------------------------


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    if case in ZART_CASES:
        return run_zart(case, args.workflows, args.procs, args.concurrency, args.batch)
    return run_dbos(
        case,
        args.workflows,
        args.procs,
        args.dbos_polling,
        args.dbos_worker_concurrency,
        args.dbos_result_polling,
        args.dbos_enqueue_threads,
    )


RATIOS = {"zart start_many": "start_many/dbos", f"zart astart x{TASKS}": "astart/dbos"}


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case, the median of its rounds; for a DBOS case, also Zart's workflows/s over its own for
    each Zart case, each ratio taken within one round (the same minutes of the machine), then the
    median of the rounds' ratios."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row)
    rate = {(row["case"], row["round"]): row["workflows_per_s"] for row in rows}
    medians = []
    for runs in by_case.values():
        median = {key: value for key, value in runs[0].items() if key not in ("round", "cpus_busy_before")}
        median["right_results"] = sum(r["right_results"] for r in runs)
        if "per_process" in median:
            median["per_process"] = " ".join(r["per_process"] for r in runs)
        for key in (
            "seconds",
            "workflows_per_s",
            "recorded_seconds",
            "transactions_per_workflow",
            "worker_cpu_ms_per_workflow",
            "db_cpu_ms_per_workflow",
        ):
            values = [r[key] for r in runs if r.get(key) is not None]
            median[key] = statistics.median(values) if values else None
        median["rounds"] = len(runs)
        median["runs"] = " ".join(f"{r['workflows_per_s']:g}" for r in runs)
        if median["engine"] == "dbos":
            for zart_case, name in RATIOS.items():
                ratios = [
                    rate[zart_case, r["round"]] / r["workflows_per_s"]
                    for r in runs
                    if (zart_case, r["round"]) in rate
                ]
                median[name] = round(statistics.median(ratios), 2) if ratios else None
        medians.append(median)
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=3000)
    parser.add_argument("--procs", type=int, default=2, help="worker processes, on each engine")
    parser.add_argument("--rounds", type=int, default=1, help="every case this many times, alternating")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--concurrency", type=int, default=500, help="Zart: executions per worker process")
    parser.add_argument("--batch", type=int, default=200, help="Zart: tasks claimed per query")
    parser.add_argument("--dbos-polling", type=float, default=1.0, help="DBOS: queue polling interval (s)")
    parser.add_argument(
        "--dbos-worker-concurrency", type=int, default=0, help="DBOS: workflows per process (0: no limit)"
    )
    parser.add_argument(
        "--dbos-enqueue-threads", type=int, default=TASKS, help="DBOS: client threads enqueueing (1: in turn)"
    )
    parser.add_argument(
        "--dbos-result-polling", type=float, default=0.01, help="DBOS: get_result's polling interval (s)"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait for an idle machine before a case"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per case instead of a table")
    args = parser.parse_args(argv)
    args.dbos_worker_concurrency = args.dbos_worker_concurrency or None
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if any(case in DBOS_CASES for case in cases) and not dbos_installed():
        print("bench.peers: dbos is not installed (pip install -e '.[peers]'): Zart only", file=sys.stderr)
        cases = [case for case in cases if case not in DBOS_CASES]

    about = versions()
    rows: list[dict[str, Any]] = []
    for number in range(args.rounds):
        order = cases if number % 2 == 0 else cases[::-1]  # a drift of the machine falls on both
        for case in order:
            busy = None if args.no_wait else round(wait_for_quiet(), 2)
            row = {**run_case(case, args), "round": number + 1, "cpus_busy_before": busy}
            row["version"] = about["zart"] if row["engine"] == "zart" else about["dbos"]
            rows.append(row)
            if args.json:
                print(orjson.dumps({**row, **versions_of(about)}).decode(), flush=True)
            else:
                print(f"round {number + 1}: {orjson.dumps(row).decode()}", file=sys.stderr, flush=True)
    medians = summary(rows)
    if args.json:
        for median in medians:
            print(orjson.dumps({**median, "benchmark": "peers-summary", **versions_of(about)}).decode())
        return
    print(
        f"Zart {about['zart']}, DBOS {about['dbos']}, PostgreSQL {about['postgresql']},"
        f" Python {about['python']}, {about['cpus']} CPUs; {args.workflows} workflows of 3 steps,"
        f" {args.procs} worker processes each; medians of {args.rounds} round(s)"
    )
    columns = ["case", "version", "workflows", "seconds", "workflows_per_s", *RATIOS.values()]
    more = [
        "recorded_seconds",
        "transactions_per_workflow",
        "worker_cpu_ms_per_workflow",
        "db_cpu_ms_per_workflow",
        "runs",
    ]
    print(table(medians, [*columns, *more]))
    print(
        "start_many/dbos, astart/dbos: Zart's workflows/s (that case) over the DBOS case's, in the same"
        " round. recorded_seconds: first creation to last end as the engine recorded them."
        " transactions: PostgreSQL's count in the case's database (read-only ones too, the client's"
        " too). CPU: milliseconds per workflow of the worker processes and of the database's sessions."
    )


if __name__ == "__main__":
    main()
