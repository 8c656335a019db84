"""Throughput of the whole engine against what PostgreSQL itself can commit, measured in one run.

    python -m bench.throughput --procs 2 --workflows 5000 --steps 3

Creates a fresh database, starts a real `zart supervise --procs P`, enqueues W workflows of S no-op
steps once its workers are waiting (`zart.start_many`, or INSERT ... SELECT before queues existed),
waits until all are done, and prints one JSON line. In the same run
and with the same number of connections (P) it measures the ceiling: single-row INSERT + COMMIT
transactions per second from plain psycopg. The headline is `ratio` = checkpoints/s / ceiling: a
step costs at least a commit, so a ratio above 1 is only reachable by grouping many executions'
checkpoints into one transaction, which is what the batch completer does. It also reports the CPU
time per workflow of the workers and of their database sessions: on a shared machine the rates
swing with the other load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from typing import Any

import orjson
import psycopg
from psycopg import conninfo

import zart
from tests.helpers import local_server_url
from zart import sql
from zart.pools import close_pools
from zart.schema import migrate

from .harness import REPO_ROOT, CpuMeter, per_workflow, supervise

__all__ = ["REPO_ROOT", "FreshDatabase", "enqueue", "run", "server_url"]  # REPO_ROOT: bench/latency.py


def server_url() -> str:
    """The tests' rule: $ZART_TEST_DATABASE_URL, else 127.0.0.1:5432, else the embedded server."""
    url = local_server_url()
    if url:
        return url
    from zart.embedded import embedded_url

    return embedded_url()


class FreshDatabase:
    """A database of the benchmark's own, dropped at the end."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"zart_bench_{uuid.uuid4().hex[:10]}"
        params = conninfo.conninfo_to_dict(server)
        params["dbname"] = self.name
        self.url = conninfo.make_conninfo(**params)

    def __enter__(self) -> FreshDatabase:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        migrate(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def commit_ceiling(url: str, connections: int, seconds: float = 3.0) -> float:
    """Single-row INSERT + COMMIT transactions per second from `connections` connections."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, v int)")
    counts = [0] * connections
    stop = time.monotonic() + seconds

    def hammer(slot: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < stop:
                with conn.transaction():
                    conn.execute("INSERT INTO bench_ceiling (v) VALUES (%s)", (slot,))
                counts[slot] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - began)


# Whether the engine has queues (issue 13): the same script measures both versions.
HAS_QUEUES = hasattr(zart, "start_many")


def enqueue(url: str, workflows: int, steps: int, pre_admitted: bool = False) -> None:
    """W executions and their workflow tasks, all at once; waiting workers are woken by a NOTIFY.

    With queues, they are started by `zart.start_many`, 10,000 a call (about 0.2 s each), so their
    tasks wait in the default queue until a claim admits them, as any start's do: the run measures
    admission too. Before queues, and with `pre_admitted`, two INSERT ... SELECT write the
    tasks claimable at once, as this harness always did: then only the claim of work that already
    began is measured (a state no start creates since queues exist).
    """
    if HAS_QUEUES and not pre_admitted:
        from . import apps

        for first in range(1, workflows + 1, 10_000):
            ids = [f"bench-{n}" for n in range(first, min(first + 10_000, workflows + 1))]
            zart.start_many(apps.bench_steps, [steps] * len(ids), ids, database_url=url)
        close_pools(url)
        return
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO zart_execution_runs (id, workflow, input)"
            " SELECT 'bench-' || g, 'bench-steps', %s::json FROM generate_series(1, %s) g",
            (str(steps), workflows),
        )
        conn.execute(
            "INSERT INTO zart_tasks (execution_id, kind)"
            " SELECT id, 'workflow' FROM zart_execution_runs WHERE status = 'pending'"
        )
        conn.execute(sql.NOTIFY_TASKS)  # the workers are already waiting


def prefill_finished(url: str, executions: int, steps: int = 3) -> None:
    """`executions` finished executions with their steps and attempts, as a busy system keeps."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO zart_execution_runs (id, workflow, status, input, result, created_at, started_at,"
            " finished_at) SELECT 'old-' || g, 'bench-steps', 'completed', '3', '3',"
            " now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'"
            " FROM generate_series(1, %s) g",
            (executions,),
        )
        conn.execute(
            "INSERT INTO zart_steps (execution_id, step_key, seq, status, output, finished_at)"
            " SELECT 'old-' || g, 'bench-noop#' || s, s - 1, 'completed', '1', now() - interval '1 day'"
            " FROM generate_series(1, %s) g, generate_series(1, %s) s",
            (executions, steps),
        )
        conn.execute(
            "INSERT INTO zart_step_attempts (execution_id, step_key, attempt, started_at, finished_at,"
            " outcome) SELECT 'old-' || g, 'bench-noop#' || s, 1, now() - interval '1 day',"
            " now() - interval '1 day', 'succeeded' FROM generate_series(1, %s) g, generate_series(1, %s) s",
            (executions, steps),
        )
        conn.execute("VACUUM ANALYZE zart_execution_runs")
        conn.execute("VACUUM ANALYZE zart_steps")
        conn.execute("VACUUM ANALYZE zart_step_attempts")
        conn.execute("CHECKPOINT")  # write the prefill out now, not during the measurement


def run(
    procs: int,
    workflows: int,
    steps: int,
    concurrency: int,
    batch: int,
    prefill: int = 0,
    pre_admitted: bool = False,
) -> dict[str, Any]:
    with FreshDatabase(server_url()) as database:
        url = database.url
        if prefill:
            prefill_finished(url, prefill)
        ceiling = commit_ceiling(url, procs)
        began = time.monotonic()
        # The workers start first, idle, so that the CPU meter sees only the run: the start-up of
        # two Python processes would otherwise weigh as much as a few thousand workflows.
        with (
            supervise(url, procs, concurrency=concurrency, batch=batch) as supervisor,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            meter = CpuMeter(conn, supervisor.pid)
            meter.start()
            enqueue(url, workflows, steps, pre_admitted)
            while True:
                # Finished executions leave no task: poll the small table, not the big one.
                if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM zart_tasks)").fetchone()[0]:
                    break
                if supervisor.poll() is not None:
                    raise RuntimeError("the supervisor exited early")
                time.sleep(0.02)
            worker_cpu, database_cpu = meter.stop()
            elapsed = time.monotonic() - began
            completed = conn.execute(
                "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed' AND id LIKE 'bench-%%'"
            ).fetchone()[0]
            if completed != workflows:
                raise RuntimeError(f"only {completed} of {workflows} executions completed")
            first, last, latencies = conn.execute(
                "SELECT min(started_at), max(finished_at),"
                " array_agg(extract(epoch FROM finished_at - started_at)::float8)"
                " FROM zart_execution_runs WHERE id LIKE 'bench-%%'"
            ).fetchone()
    busy = (last - first).total_seconds()  # from the first step to the last finish
    latencies.sort()
    checkpoints = workflows * steps
    return {
        "procs": procs,
        "workflows": workflows,
        "steps": steps,
        "concurrency": concurrency,
        "seconds": round(busy, 3),
        "seconds_with_startup": round(elapsed, 3),
        "workflows_per_s": round(workflows / busy, 1),
        "checkpoints_per_s": round(checkpoints / busy, 1),
        "p50_latency_ms": round(1000 * statistics.median(latencies), 2),
        "p99_latency_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
        "ceiling_commits_per_s": round(ceiling, 1),
        "ratio": round(checkpoints / busy / ceiling, 3),
        # CPU per workflow, from enqueue to the last finish: steadier than the rates when the
        # machine is shared (see bench/harness.py, CpuMeter).
        "worker_cpu_ms_per_workflow": per_workflow(worker_cpu, workflows),
        "db_cpu_ms_per_workflow": per_workflow(database_cpu, workflows),
        "finished_executions_already_in_tables": prefill,
        # How the executions began: admitted by the claim (queues), admitted up front, or no queues.
        "begin": ("pre-admitted" if pre_admitted else "admission") if HAS_QUEUES else "no queues",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--workflows", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--prefill", type=int, default=0, help="finished executions already in the tables")
    parser.add_argument(
        "--pre-admitted",
        action="store_true",
        help="write the tasks admitted already (no admission by the claim), as before queues",
    )
    args = parser.parse_args(argv)
    result = run(
        args.procs, args.workflows, args.steps, args.concurrency, args.batch, args.prefill, args.pre_admitted
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
