"""Micro-benchmarks of the hot path (pytest-benchmark). CI runs them in a short mode (see the
`--benchmark-*` options in pyproject.toml) and keeps their JSON in bench/results/micro.json."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import psycopg
import pytest
import trio

import zart
from zart import serde, sql
from zart.completer import Completer, Fragment
from zart.db import open_pool
from zart.pools import close_pools
from zart.replay import Checkpoint, ExecutionContext, Services, utcnow

from . import apps


@dataclasses.dataclass
class Order:
    order_id: str
    amount: float
    items: list
    placed_at: datetime.datetime


ORDER = Order("o-42", 99.5, [{"sku": f"sku-{i}", "qty": i} for i in range(10)], datetime.datetime(2026, 1, 1))


def test_serialise_a_step_result(benchmark):
    data, value = benchmark(serde.roundtrip, ORDER, "the result of step 'x'")
    assert value["order_id"] == "o-42" and len(value["items"]) == 10 and data.startswith(b"{")


# As on Zart's own connections (zart.db): with JIT on, PostgreSQL compiles the claim of queues, whose
# cost estimates over tables without statistics pass jit_above_cost, in about 70 ms each time it is
# planned, and these benchmarks plan it every round.
_NO_JIT = "SET jit = off"


def _enqueue(url: str, count: int, prefix: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO zart_execution_runs (id, workflow, input)"
            " SELECT %s || g, 'bench-steps', '1' FROM generate_series(1, %s) g",
            (prefix, count),
        )
        conn.execute(
            "INSERT INTO zart_tasks (execution_id) SELECT id FROM zart_execution_runs WHERE id LIKE %s",
            (prefix + "%",),
        )


def _claims_of_50(benchmark, url: str) -> int:
    """The claim query of 50, benchmarked on a prepared statement; each round rolled back, so that
    the backlog stays the same every round. Returns how many tasks one claim took."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_NO_JIT)
        conn.prepare_threshold = 0

        def claim() -> int:
            with conn.transaction(force_rollback=True):
                rows = conn.execute(
                    sql.CLAIM_TASKS, {"limit": 50, "lease": 30.0, "worker": "bench", "lookahead": 0.0}
                ).fetchall()
            return len(rows)

        return benchmark(claim)


def test_claim_query_50_from_a_backlog_of_1000(benchmark, fresh_database_url):
    url = fresh_database_url
    _enqueue(url, 1000, "claim-")
    assert _claims_of_50(benchmark, url) == 50


def _start(url: str, count: int, prefix: str) -> None:
    """`count` executions as a start writes them: with queues (zart.start_many), waiting in the
    default queue for a claim to admit them; before queues, claimable at once (as `_enqueue`)."""
    if not hasattr(zart, "start_many"):
        _enqueue(url, count, prefix)
        return
    ids = [f"{prefix}{n}" for n in range(1, count + 1)]
    zart.start_many(apps.bench_steps, [1] * count, ids, database_url=url)
    close_pools(url)


def test_claim_query_50_starting_executions_from_a_backlog_of_1000(benchmark, fresh_database_url):
    """The claim of executions that begin now. With queues this is the admission path (the default
    queue's backlog, marking them running); `test_claim_query_50_from_a_backlog_of_1000` writes its
    tasks admitted already, so it measures only the claim of work that already began."""
    url = fresh_database_url
    _start(url, 1000, "begin-")
    assert _claims_of_50(benchmark, url) == 50


# Puts the claimed tasks (and, with queues, their executions) back as they were before the claim, by
# committed UPDATEs: unlike a rollback, these leave psycopg's prepared statements in place.
_UNCLAIM = "UPDATE zart_tasks SET run_at = now() - interval '1 hour', claimed_by = NULL, claims = 0"
_UNCLAIM_QUEUED = (
    _UNCLAIM + ", admitted = false WHERE claimed_by = 'bench'",
    "UPDATE zart_execution_runs SET status = 'pending', started_at = NULL, deadline_at = NULL"
    " WHERE status = 'running'",
)


@pytest.mark.parametrize("backlog", ["began", "starting"])
def test_claim_of_50_with_a_cached_plan(benchmark, fresh_database_url, backlog):
    """The claim as a worker runs it: a prepared statement (the worker's connections prepare on the
    second use) whose plan PostgreSQL caches, committed. The two tests above roll each round back,
    and psycopg forgets its prepared statements at every ROLLBACK, so they plan the statement every
    round: with the claim of queues, planning costs more than running it.

    `began`: 1,000 tasks of executions that began (claimable at once); `starting`: 1,000 executions
    as a start writes them (with queues: waiting for admission)."""
    url = fresh_database_url
    queued = hasattr(zart, "start_many") and backlog == "starting"
    (_start if backlog == "starting" else _enqueue)(url, 1000, "cached-")
    resets = _UNCLAIM_QUEUED if queued else (_UNCLAIM + " WHERE claimed_by = 'bench'",)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_NO_JIT)
        # Statistics, as autovacuum gives a worker's database: without them the generic plan of the
        # admission path scans zart_tasks and takes twice as long.
        conn.execute("ANALYZE zart_tasks, zart_execution_runs")
        conn.prepare_threshold = 1  # as the worker's connections (zart.db)

        def unclaim() -> tuple[tuple[()], dict[str, object]]:
            for statement in resets:
                conn.execute(statement)
            return (), {}

        def claim() -> int:
            with conn.transaction():
                return len(
                    conn.execute(
                        sql.CLAIM_TASKS, {"limit": 50, "lease": 30.0, "worker": "bench", "lookahead": 0.0}
                    ).fetchall()
                )

        benchmark.pedantic(claim, setup=unclaim, rounds=100, warmup_rounds=10)
        assert claim() == 50


def test_completion_transaction_of_100_checkpoints(benchmark, fresh_database_url):
    url = fresh_database_url
    _enqueue(url, 100, "done-")
    with psycopg.connect(url, autocommit=True) as conn:
        tasks = conn.execute(
            sql.CLAIM_TASKS, {"limit": 100, "lease": 300.0, "worker": "bench", "lookahead": 0.0}
        ).fetchall()
    pool = open_pool(url, min_size=1, max_size=1)
    completer = Completer(pool, trio.CapacityLimiter(1), "bench")
    now = utcnow()
    fragments = [
        Fragment(
            execution_id,
            task_id,
            claims,
            attempt_starts=[("bench-noop#2", 1, now)],
            attempt_ends=[("bench-noop#1", 1, now, "succeeded", None, None, None)],
            steps=[("bench-noop#1", 0, "step", "completed", "1", None, 1, now, now, None)],
        )
        for task_id, claims, execution_id, *_ in tasks
    ]
    try:
        with pool.connection() as conn:

            def complete() -> int:
                with conn.pipeline(), conn.transaction(force_rollback=True):
                    return len(completer.write_batch(conn, fragments).held)

            assert benchmark(complete) == 100
    finally:
        pool.close()


def test_replay_of_a_100_step_history(benchmark, fresh_database_url):
    url = fresh_database_url
    with zart.Worker(url):
        handle = zart.start(apps.bench_steps, 100, id=f"replay-{uuid.uuid4()}", database_url=url)
        assert handle.result(timeout=60) == sum(range(100))
    with psycopg.connect(url, autocommit=True) as conn:
        history = [
            Checkpoint(key, seq, status, output, error, kind, wake_in)
            for _, _, key, seq, kind, status, output, error, wake_in in conn.execute(
                sql.SELECT_HISTORY, {"ids": [handle.id], "keys": [None]}
            )
        ]
    assert len(history) == 100
    pool = open_pool(url, min_size=1, max_size=2)

    def claim_again() -> tuple[tuple[int, int], dict]:
        with pool.connection() as conn, conn.transaction():
            conn.execute("UPDATE zart_execution_runs SET status = 'running' WHERE id = %s", (handle.id,))
            row = conn.execute(
                "INSERT INTO zart_tasks (execution_id, claimed_by, claims, run_at)"
                " VALUES (%s, 'bench', 1, now() + interval '5 minutes') RETURNING id, claims",
                (handle.id,),
            ).fetchone()
        return (row,), {}

    async def replay(task: tuple[int, int]) -> None:
        completer = Completer(pool, trio.CapacityLimiter(2), "bench")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(completer.run)
            execution = ExecutionContext(
                execution_id=handle.id,
                workflow_name="bench-steps",
                workflow=apps.bench_steps,
                task_id=task[0],
                claims=task[1],
                history=history,
                last_attempts={},
                services=Services(completer, trio.CapacityLimiter(1), "bench", lambda: None),
                status="running",
            )
            await execution.run("100")
            nursery.cancel_scope.cancel()

    try:
        benchmark.pedantic(lambda task: trio.run(replay, task), setup=claim_again, rounds=10)
        assert handle.status() == "completed"
        assert len(handle.steps()) == 100  # replay ran no step again
    finally:
        pool.close()
        close_pools(url)
