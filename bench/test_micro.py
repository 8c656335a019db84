"""Micro-benchmarks of the hot path (pytest-benchmark). CI runs them in a short mode (see the
`--benchmark-*` options in pyproject.toml) and keeps their JSON in bench/results/micro.json."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import psycopg
import trio

import zart
from zart import serde, sql
from zart.completer import Completer, Fragment
from zart.db import close_pools, open_pool
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


def test_claim_query_50_from_a_backlog_of_1000(benchmark, fresh_database_url):
    url = fresh_database_url
    _enqueue(url, 1000, "claim-")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.prepare_threshold = 0

        def claim() -> int:
            with conn.transaction(force_rollback=True):  # the backlog stays the same every round
                rows = conn.execute(
                    sql.CLAIM_TASKS, {"limit": 50, "lease": 30.0, "worker": "bench"}
                ).fetchall()
            return len(rows)

        assert benchmark(claim) == 50


def test_completion_transaction_of_100_checkpoints(benchmark, fresh_database_url):
    url = fresh_database_url
    _enqueue(url, 100, "done-")
    with psycopg.connect(url, autocommit=True) as conn:
        tasks = conn.execute(sql.CLAIM_TASKS, {"limit": 100, "lease": 300.0, "worker": "bench"}).fetchall()
    pool = open_pool(url, min_size=1, max_size=1)
    completer = Completer(pool, trio.CapacityLimiter(1), "bench", 300.0)
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
                with conn.transaction(force_rollback=True):
                    return len(completer.write_batch(conn, fragments))

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
        completer = Completer(pool, trio.CapacityLimiter(2), "bench", 300.0)
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
