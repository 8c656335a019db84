"""Hardening, lifecycle: stops that always end, parks a shutdown cannot undo, claims that cannot
strand, steps that cannot crash-loop a worker.

Regression tests for items 3, 5, 8, 12 (timeouts), 13, 14 and 15 of the hardening issue (each failed
on commit 5b3cc6c).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

import psycopg
import pytest
import trio

import zart
from zart import claimer, sql
from zart.completer import Completer
from zart.db import open_pool
from zart.listener import Listener
from zart.replay import Services
from zart.runner import Runner
from zart.trio_pg import TrioConnection
from zart.worker import Worker
from zart.workerstate import ClaimedTask, Held, WorkerState

from .apps import hardening_app as app
from .helpers import SupervisorProcess, WorkerProcess, query, scalar, wait_until


def _stop_within(worker: Worker, seconds: float) -> float:
    """Call worker.stop() in a thread; fail unless it returns within `seconds`."""
    stopper = threading.Thread(target=worker.stop, daemon=True)
    began = time.monotonic()
    stopper.start()
    stopper.join(seconds)
    assert not stopper.is_alive(), f"Worker.stop() still running after {seconds} s"
    return time.monotonic() - began


# -- item 3: stop and drain always end -------------------------------------------------------------


def test_stop_under_load_returns_promptly_every_time(fresh_database_url, monkeypatch):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    for _ in range(40):
        zart.start(app.many_steps, 100_000, database_url=url)
    for _ in range(3):
        worker = Worker(url, lease="5s", poll_interval="0.5s", concurrency=40).start()
        before = scalar(url, "SELECT count(*) FROM zart_steps")
        wait_until(
            lambda before=before: scalar(url, "SELECT count(*) FROM zart_steps") > before + 500,
            what="steps to be committed",
        )
        _stop_within(worker, 8)
    # Everything was handed back: no task is left claimed.
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL") == 0


def test_sigterm_under_load_exits_within_the_grace(fresh_database_url, subprocess_env):
    url = fresh_database_url
    for _ in range(40):
        zart.start(app.many_steps, 100_000, database_url=url)
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    process = WorkerProcess(env, "--grace", "1s", "--concurrency", "40", app="tests.apps.hardening_app")
    try:
        process.wait_started()
        wait_until(lambda: scalar(url, "SELECT count(*) FROM zart_steps") > 500, what="steps")
        process.process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        process.process.wait(8)  # grace 1 s plus a few seconds
        assert time.monotonic() - began < 8
    finally:
        code = process.stop()
    assert code == 0, process.log()
    assert "event=worker.stopped" in process.log()
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL") == 0


def test_stop_while_the_database_is_unreachable_still_ends(fresh_database_url, server_url, monkeypatch):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    for _ in range(10):
        zart.start(app.many_steps, 100_000, database_url=url)
    worker = Worker(url, lease="5s", poll_interval="0.5s", concurrency=10).start()
    wait_until(lambda: scalar(url, "SELECT count(*) FROM zart_steps") > 200, what="steps")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            took = _stop_within(worker, 9)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert took < 9  # 3 s for the commits in flight, 3 s for the hand-back, the pool


# -- item 5: a shutdown never un-parks what the completer parked -------------------------------------


@pytest.mark.parametrize("kind", ["sleep", "parallel"])
def test_stop_during_a_park_keeps_the_park(kind, fresh_database_url, monkeypatch):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    # inline_fanout=0: the parallel branches are tasks, and the workflow parks on them
    worker = Worker(url, lease="30s", poll_interval="0.3s", inline_fanout=0).start()
    handle = zart.start(app.park_at_stop, kind, database_url=url)
    wait_until(lambda: handle.id in app.held_locks, what="the step to take the table lock")
    # The park's batch is waiting for the lock: stop now, then let the park commit.
    wait_until(
        lambda: scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()",
        ),
        what="the completer's batch to wait for the lock",
    )
    stopper = threading.Thread(target=worker.stop, daemon=True)
    stopper.start()
    wait_until(lambda: worker._state.stopping, what="the stop to begin")
    app.held_locks.pop(handle.id).commit()
    stopper.join(15)
    assert not stopper.is_alive()
    ready_now = scalar(
        url,
        "SELECT bool_or(run_at <= now()) FROM zart_tasks WHERE execution_id = %s AND kind = 'workflow'",
        (handle.id,),
    )
    assert ready_now is False, "the shutdown woke a parked workflow task"
    if kind == "sleep":
        assert handle.status() == "sleeping"


def test_a_map_whose_workflow_is_woken_early_runs_each_item_once(fresh_database_url, monkeypatch):
    """Item 5: a replay that loaded the history before some branches finished re-created their tasks
    (INSERT_BRANCH_TASKS), and the branch tasks never checked for a checkpoint."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    with (  # branch tasks (inline_fanout=0): the replay that re-creates them is what is tested
        Worker(url, lease="10s", poll_interval="0.3s", concurrency=3, inline_fanout=0),
        Worker(url, lease="10s", poll_interval="0.3s", concurrency=3, inline_fanout=0),
    ):
        handle = zart.start(app.mapper, 60, database_url=url)
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM zart_steps WHERE execution_id = %s", (handle.id,)) >= 8,
            what="8 items to finish",
        )
        # What the hand-back of held tasks at shutdown used to do to a parked workflow task.
        for _ in range(3):
            query(
                url,
                "UPDATE zart_tasks SET run_at = now(), claimed_by = NULL "
                "WHERE kind = 'workflow' AND execution_id = %s RETURNING id",
                (handle.id,),
            )
            time.sleep(0.1)  # not a wait for a condition: spacing the spurious wake-ups apart
        assert handle.result(timeout=60) == sum(i * i for i in range(60))
    runs = query(
        url,
        "SELECT step_key, count(*) FROM test_effects WHERE execution_id = %s GROUP BY 1 HAVING count(*) > 1",
        (handle.id,),
    )
    assert runs == []
    assert scalar(url, "SELECT count(*) FROM test_effects WHERE execution_id = %s", (handle.id,)) == 60


# -- item 8: zart.map is linear ---------------------------------------------------------------------


def test_map_branch_claims_load_only_their_own_step(fresh_database_url, monkeypatch):
    url = fresh_database_url
    loaded = {"branch_rows": 0, "branches": 0}
    original = claimer.load_claimed

    def counting(*args: Any) -> Any:
        tasks, due = original(*args)
        for task in tasks:
            if task.kind == "step":
                loaded["branches"] += 1
                loaded["branch_rows"] += len(task.history)
        return tasks, due

    monkeypatch.setattr(claimer, "load_claimed", counting)
    with Worker(url, lease="30s", poll_interval="0.5s", concurrency=100, batch=50):
        began = time.monotonic()
        handle = zart.start(app.map_n, 1500, database_url=url)
        assert handle.result(timeout=60) == sum(i * i for i in range(1500))
        took = time.monotonic() - began
    assert loaded["branches"] >= 1500
    # A fresh branch has no checkpoint yet: it loads nothing (5b3cc6c loaded the whole history,
    # about N^2/2 rows in all).
    assert loaded["branch_rows"] <= 5, loaded
    assert took < 30


# -- item 12: a workflow timeout closes its branches' attempts --------------------------------------


def test_a_workflow_timeout_closes_the_attempts_of_its_branches(worker, database_url):
    handle = zart.start(app.fan_timeout, database_url=database_url)
    with pytest.raises(zart.WorkflowTimedOut):
        handle.result(timeout=20)
    attempts = query(
        database_url,
        "SELECT step_key, outcome, error_type FROM zart_step_attempts WHERE execution_id = %s ORDER BY 1",
        (handle.id,),
    )
    assert attempts == [
        ("long-branch#1", "timed_out", "WorkflowTimedOut"),
        ("long-branch#2", "timed_out", "WorkflowTimedOut"),
    ]
    assert scalar(database_url, "SELECT count(*) FROM zart_tasks WHERE execution_id = %s", (handle.id,)) == 0


# -- item 13: a claim whose answer was lost strands nothing ---------------------------------------


def test_a_claim_whose_answer_is_lost_is_not_left_for_a_whole_lease(database_url, monkeypatch):
    """The claim's connection dies (pg_terminate_backend) right after CLAIM_TASKS has committed,
    its answer lost with it: the claimer gets the connection's error instead of the claimed rows,
    and its next claim hands back what was claimed in its name."""
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", database_url)
    armed = [True]
    original = TrioConnection.query

    async def claim_then_lose(self: TrioConnection, statement: str, params: Any) -> Any:
        rows = await original(self, statement, params)
        if statement is sql.CLAIM_TASKS and armed[0] and any(row[0] is not None for row in rows):
            armed[0] = False
            with psycopg.connect(database_url, autocommit=True) as admin:
                (pid,) = (await original(self, "SELECT pg_backend_pid()", {}))[0]
                admin.execute("SELECT pg_terminate_backend(%s)", (int(pid),))
            await original(self, "SELECT 1", {})  # raises: the connection is gone
        return rows

    monkeypatch.setattr(TrioConnection, "query", claim_then_lose)
    with Worker(database_url, lease="30s", poll_interval="0.5s"):
        began = time.monotonic()
        handle = zart.start(app.many_steps, 3, database_url=database_url)
        assert handle.result(timeout=10) == 3  # the lease is 30 s
        took = time.monotonic() - began
    assert armed == [False], "the connection was never cut"
    assert took < 5


# -- item 14: a step that kills its worker is not retried forever ----------------------------------


def test_a_step_that_crashes_its_worker_fails_its_execution_after_the_limit(subprocess_env, database_url):
    env = dict(subprocess_env)
    supervisor = SupervisorProcess(
        env, "--procs", "1", "--max-abandoned", "2", app="tests.apps.hardening_app"
    )
    try:
        supervisor.wait_workers(1)
        handle = zart.start(app.poison_pill, database_url=database_url)
        with pytest.raises(zart.WorkflowFailed) as failure:
            handle.result(timeout=60)
        other = zart.start(app.bystander, database_url=database_url)
        assert other.result(timeout=30) == 2
        assert supervisor.process.poll() is None
    finally:
        code = supervisor.stop()
    assert code == 0
    assert failure.value.error_type == "StepAbandoned"
    assert "'crash-worker#1' was abandoned 2 times" in failure.value.message
    assert "max_abandoned=2" in failure.value.message
    runs = scalar(database_url, "SELECT count(*) FROM test_effects WHERE execution_id = %s", (handle.id,))
    assert runs == 2
    outcomes = query(
        database_url,
        "SELECT attempt, outcome, error_type FROM zart_step_attempts WHERE execution_id = %s ORDER BY 1",
        (handle.id,),
    )
    assert outcomes == [(1, "abandoned", "WorkerLost"), (2, "abandoned", "WorkerLost")]


def test_a_drained_attempt_does_not_count_towards_the_limit(fresh_database_url, subprocess_env):
    """A SIGTERM drain closes the attempt it cuts short as WorkerStopped, not WorkerLost."""
    url = fresh_database_url
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    handle = zart.start(app.slow, database_url=url)  # a step of 30 s
    process = WorkerProcess(env, "--grace", "0.2s", app="tests.apps.hardening_app")
    try:
        process.wait_started()
        wait_until(
            lambda: (
                scalar(
                    url,
                    "SELECT count(*) FROM zart_step_attempts WHERE execution_id = %s AND outcome IS NULL",
                    (handle.id,),
                )
                == 1
            ),
            what="the step to start",
        )
        process.process.send_signal(signal.SIGTERM)
        process.process.wait(10)
    finally:
        process.stop()
    assert query(
        url,
        "SELECT DISTINCT outcome, error_type FROM zart_step_attempts WHERE execution_id = %s",
        (handle.id,),
    ) == [("abandoned", "WorkerStopped")]


# -- item 15: a runner only forgets its own entry ----------------------------------------------------


def test_a_finished_runner_keeps_the_entry_of_its_task_reclaimed_meanwhile(database_url):
    """A worker that re-claimed its own lapsed task has a new runner (and entry) for it; the old
    runner ending must not remove that entry, or the new runner's lease is never renewed."""
    execution_id = f"reclaimed-{time.monotonic_ns()}"
    query(
        database_url,
        "INSERT INTO zart_execution_runs (id, workflow, status) VALUES (%s, 'x', 'completed') RETURNING id",
        (execution_id,),
    )
    state = WorkerState(f"test-worker-{execution_id}")
    task_id = scalar(
        database_url,
        "INSERT INTO zart_tasks (execution_id, claimed_by, claims, run_at) "
        "VALUES (%s, %s, 1, now() + interval '1 minute') RETURNING id",
        (execution_id, state.worker_id),
    )
    task = ClaimedTask(task_id, 1, execution_id, "workflow", "x", "completed", None, None, [], {}, [])

    async def main() -> None:
        pool = await trio.to_thread.run_sync(lambda: open_pool(database_url, max_size=2))
        completer = Completer(pool, trio.CapacityLimiter(2), state.worker_id)
        services = Services(completer, trio.CapacityLimiter(2), state.worker_id, state.wake_claimer)
        runner = Runner(state, services, concurrency=100, poll_interval=5.0)
        # Holds the old runner's commit back while the task is "re-claimed".
        locker = psycopg.connect(database_url)
        locker.execute("SELECT 1 FROM zart_tasks WHERE id = %s FOR UPDATE", (task_id,))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(completer.run)
                old = state.held[task_id] = Held(task, trio.CancelScope(), trio.current_time())
                async with trio.open_nursery() as runners:
                    runners.start_soon(runner.run_task, old)
                    while not scalar(
                        database_url,
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()",
                    ):
                        await trio.sleep(0.01)
                    state.held[task_id] = new = Held(task, trio.CancelScope(), trio.current_time())
                    locker.rollback()
                assert state.held.get(task_id) is new
                nursery.cancel_scope.cancel()
        finally:
            locker.close()
            pool.close()

    trio.run(main)
    assert scalar(database_url, "SELECT count(*) FROM zart_tasks WHERE id = %s", (task_id,)) == 0


def test_stop_hangs_no_more_than_grace_under_supervise(subprocess_env, fresh_database_url):
    """`zart supervise` with a 1 s grace under load: SIGTERM ends it within the grace plus seconds."""
    url = fresh_database_url
    for _ in range(40):
        zart.start(app.many_steps, 100_000, database_url=url)
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    supervisor = SupervisorProcess(env, "--procs", "2", "--grace", "1s", app="tests.apps.hardening_app")
    try:
        supervisor.wait_workers(2)
        wait_until(lambda: scalar(url, "SELECT count(*) FROM zart_steps") > 500, what="steps")
        supervisor.process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        try:
            supervisor.process.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"zart supervise still running 10 s after SIGTERM:\n{supervisor.log()}")
        assert time.monotonic() - began < 10
    finally:
        code = supervisor.stop()
    assert code == 0
    assert "supervisor.killing" not in supervisor.log()


def test_a_crashing_part_of_the_worker_stops_it_instead_of_leaving_a_zombie(
    fresh_database_url, monkeypatch, caplog
):
    """Item 3: a nursery task that crashed (here the listener) used to cancel the completer under
    runners waiting for it: the worker never ended and never handed its executions back."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    handles = [zart.start(app.many_steps, 100_000, database_url=url) for _ in range(10)]

    async def crashing_listener(self: Listener) -> None:
        while scalar(url, "SELECT count(*) FROM zart_steps") < 200:
            await trio.sleep(0.01)
        raise RuntimeError("a bug in the listener")

    monkeypatch.setattr(Listener, "run", crashing_listener)
    worker = Worker(url, lease="30s", poll_interval="0.5s", concurrency=10).start()
    thread = worker._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive(), "the worker lives on after one of its parts crashed"
    assert "event=worker.crashed" in caplog.text and "a bug in the listener" in caplog.text
    # Its executions were handed back at once, not left claimed until the 30 s lease ran out.
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL") == 0
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE run_at <= now()") == len(handles)
    with pytest.raises(zart.WorkerCrashed, match="a bug in the listener"):
        worker.stop()
