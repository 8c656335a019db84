"""Starting executions (issue 13): start_many in one transaction, starts inside the caller's own
transaction (`connection=`), and the start options' bad input, refused at the call with nothing written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import zart

from .apps import core_app, queues_app
from .helpers import query, scalar


def _rows(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM zart_execution_runs") + scalar(
        url, "SELECT count(*) FROM zart_tasks"
    )


def test_start_many_is_one_transaction_and_idempotent_per_id(fresh_database_url):
    url = fresh_database_url
    inputs = [{"n": n} for n in range(10_000)]
    handles = zart.start_many(core_app.three_steps, inputs, database_url=url)
    assert len(handles) == 10_000 and all(h.created for h in handles)
    ids = [h.id for h in handles]
    assert len(set(ids)) == 10_000
    # One transaction: every row was written by the same transaction id.
    assert (
        scalar(url, "SELECT count(DISTINCT xmin::text) FROM zart_execution_runs WHERE id = ANY(%s)", (ids,))
        == 1
    )
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE NOT admitted AND queue = 'default'") == 10_000
    # Inputs kept in order, each with its own id.
    first = query(url, "SELECT input::text FROM zart_execution_runs WHERE id = %s", (ids[42],))[0][0]
    assert first == '{"n":42}'
    # Again with the same ids: nothing new, the same executions come back.
    again = zart.start_many(core_app.three_steps, inputs[:100], ids=ids[:100], database_url=url)
    assert [h.id for h in again] == ids[:100] and not any(h.created for h in again)
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == 10_000
    # Some new, some existing, in one call.
    mixed = zart.start_many(
        core_app.three_steps, [{"n": 1}, {"n": 2}], ids=[ids[0], "fresh-one"], database_url=url
    )
    assert [h.created for h in mixed] == [False, True]


def test_start_many_refuses_bad_lists(database_url):
    before = _rows(database_url)
    with pytest.raises(ValueError, match="appears twice"):
        zart.start_many(
            core_app.three_steps, [{"n": 1}, {"n": 2}], ids=["x-dup", "x-dup"], database_url=database_url
        )
    with pytest.raises(ValueError, match="one per input"):
        zart.start_many(
            core_app.three_steps, [{"n": 1}, {"n": 2}], ids=["only-one"], database_url=database_url
        )
    with pytest.raises(TypeError, match="list of workflow inputs"):
        zart.start_many(core_app.three_steps, {"n": 1}, database_url=database_url)
    with pytest.raises(zart.SerializationError, match=r"input \[1\] of workflow"):
        zart.start_many(core_app.three_steps, [{"n": 1}, {"n": object()}], database_url=database_url)
    with pytest.raises(zart.DuplicateExecution):
        zart.start(core_app.three_steps, {"n": 1}, id="taken-by-three", database_url=database_url)
        zart.start_many(queues_app.unqueued, [{"ms": 1}], ids=["taken-by-three"], database_url=database_url)
    assert _rows(database_url) == before + 2  # only the one start that was meant to succeed


def test_start_many_of_nothing_starts_nothing(database_url):
    assert zart.start_many(core_app.three_steps, [], database_url=database_url) == []


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"queue": "no-such-queue"},
            zart.UnknownQueue,
            r"unknown queue 'no-such-queue'; known queues: .*'default'",
        ),
        ({"priority": 1.5}, TypeError, "priority must be a whole number"),
        ({"priority": "high"}, TypeError, "priority must be a whole number"),
        ({"priority": True}, TypeError, "priority must be a whole number"),
        ({"priority": 2**40}, ValueError, "priority must be between"),
        ({"delay": "soon"}, ValueError, "invalid delay 'soon'"),
        ({"delay": "-1s"}, ValueError, "invalid delay"),
        ({"delay": "1s", "run_at": datetime.now(UTC)}, ValueError, "not both"),
        ({"run_at": datetime(2030, 1, 1)}, ValueError, "timezone-aware"),
        ({"run_at": "tomorrow"}, TypeError, "run_at must be a datetime"),
        ({"key": ""}, ValueError, "queue key must be 1 to"),
        ({"key": 42}, TypeError, "queue key must be a string"),
        ({"queue": "bad\nname"}, ValueError, "control characters"),
    ],
)
def test_bad_start_options_fail_at_the_call(database_url, options, error, message):
    before = _rows(database_url)
    with pytest.raises(error, match=message):
        zart.start(core_app.three_steps, {"n": 1}, database_url=database_url, **options)
    assert _rows(database_url) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"rate": "100 per s"},
            ValueError,
            r"invalid rate of queue 'bad-q' '100 per s': a rate is 'N/PERIOD'",
        ),
        ({"rate": "0/1s"}, ValueError, "N must be between 1"),
        ({"rate": "-1/1s"}, ValueError, "a rate is 'N/PERIOD'"),
        ({"rate": "5/0s"}, ValueError, "a rate is 'N/PERIOD'"),
        ({"rate": 100}, ValueError, "a rate is 'N/PERIOD'"),
        ({"concurrency": -1}, ValueError, "concurrency of queue 'bad-q' must be between 0"),
        ({"concurrency": 2.5}, TypeError, "concurrency of queue 'bad-q' must be a whole number"),
        ({"per_key": 0}, ValueError, "per_key of queue 'bad-q' must be between 1"),
    ],
)
def test_bad_queue_limits_fail_at_declaration(kwargs, error, message):
    with pytest.raises(error, match=message):
        zart.Queue("bad-q", **kwargs)


def test_a_queue_declared_twice_with_other_limits_is_refused():
    zart.Queue("twice-q", concurrency=2)
    zart.Queue("twice-q", concurrency=2)  # the same declaration again is fine (a re-import)
    with pytest.raises(ValueError, match="already declared with other limits"):
        zart.Queue("twice-q", concurrency=3)


def test_workflow_with_a_bad_queue_fails_at_decoration():
    with pytest.raises(ValueError, match="workflow 'bad-queue-wf'"):
        zart.workflow("bad-queue-wf", queue=42)


def test_a_declared_queue_is_created_by_the_first_start(fresh_database_url):
    """A process that declares a queue can start into it before any worker registered it."""
    url = fresh_database_url
    zart.start(queues_app.naps, {"ms": 1}, database_url=url)  # the workflow's own queue, qt-three
    assert query(url, "SELECT concurrency FROM zart_queues WHERE name = 'qt-three'") == [(3,)]
    zart.start(queues_app.unqueued, {"ms": 1}, queue=queues_app.two_at_once, database_url=url)
    assert query(url, "SELECT concurrency FROM zart_queues WHERE name = 'qt-pair'") == [(2,)]


# -- connection= ---------------------------------------------------------------------------------------


def _notifications(listener: psycopg.Connection, within: float, stop_after: int | None = None) -> int:
    """Notifications on zart_tasks that arrive within `within` seconds (or the first `stop_after`)."""
    return len(list(listener.notifies(timeout=within, stop_after=stop_after)))


def test_start_inside_a_rolled_back_transaction_leaves_nothing(fresh_database_url, monkeypatch):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    with psycopg.connect(url, autocommit=True) as listener, psycopg.connect(url) as conn:
        listener.execute("LISTEN zart_tasks")
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE TABLE orders (id int)")
            handle = zart.start(core_app.three_steps, {"n": 1}, id="outbox-rolled-back", connection=conn)
            assert handle.created
            # Inside the transaction the execution is there, for that transaction only.
            assert conn.execute("SELECT count(*) FROM zart_execution_runs").fetchone()[0] == 1
            assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == 0
        assert _rows(url) == 0
        assert _notifications(listener, 0.3) == 0  # no wake-up either
        # Committed: it exists, the wake-up arrives with the commit, and a worker runs it.
        with conn.transaction():
            conn.execute("CREATE TABLE orders (id int)")
            conn.execute("INSERT INTO orders VALUES (1)")
            handle = zart.start(core_app.three_steps, {"n": 1}, id="outbox-committed", connection=conn)
            assert _notifications(listener, 0.2) == 0  # not before the commit
        assert _notifications(listener, 10, stop_after=1) == 1
    assert handle.database_url  # the handle works with the connection's own URL
    with zart.Worker(url, lease="2s", poll_interval="0.5s"):
        assert handle.result(timeout=30)["value"] == 4


def test_async_start_on_an_async_connection(fresh_database_url):
    url = fresh_database_url

    async def main() -> tuple[list[zart.ExecutionHandle], list[zart.ExecutionHandle]]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            async with conn.transaction():
                kept = [await zart.astart(core_app.three_steps, {"n": 1}, connection=conn)]
                kept += await zart.astart_many(core_app.three_steps, [{"n": 2}, {"n": 3}], connection=conn)
            try:
                async with conn.transaction():
                    await zart.astart(core_app.three_steps, {"n": 4}, id="async-rolled-back", connection=conn)
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
        return kept, []

    kept, _ = asyncio.run(main())
    assert len(kept) == 3
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == 3
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE id = 'async-rolled-back'") == 0


def test_bad_connections_are_refused_with_nothing_written(fresh_database_url):
    url = fresh_database_url
    with (
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(ValueError, match="not inside a transaction"),
    ):
        zart.start(core_app.three_steps, {"n": 1}, connection=conn)
    with pytest.raises(ValueError, match="is closed"):
        zart.start(core_app.three_steps, {"n": 1}, connection=conn)
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(ValueError, match="failed transaction"):
            zart.start(core_app.three_steps, {"n": 1}, connection=conn)
        conn.rollback()
    with pytest.raises(TypeError, match=r"psycopg.Connection or psycopg.AsyncConnection, not str"):
        zart.start(core_app.three_steps, {"n": 1}, connection=url)

    async def sync_api_with_async_connection() -> None:
        async with await psycopg.AsyncConnection.connect(url) as aconn, aconn.transaction():
            zart.start(core_app.three_steps, {"n": 1}, connection=aconn)

    with pytest.raises(TypeError, match=r"use `await zart\.astart"):
        asyncio.run(sync_api_with_async_connection())
    assert _rows(url) == 0


def test_a_workflow_known_only_from_the_registry_starts_in_its_registered_queue(fresh_database_url):
    """A process that did not import the workflow (the CLI, the HTTP API) still puts it in its queue."""
    url = fresh_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO zart_queues (name, concurrency) VALUES ('remote-q', 4)")
        conn.execute(
            "INSERT INTO zart_workflows (name, timeout_seconds, queue)"
            " VALUES ('remote-only-wf', 60, 'remote-q')"
        )
    handle = zart.start("remote-only-wf", {"x": 1}, database_url=url)
    assert query(
        url, "SELECT queue, timeout_seconds FROM zart_execution_runs WHERE id = %s", (handle.id,)
    ) == [("remote-q", 60.0)]
    other = zart.start("remote-only-wf", {"x": 2}, queue="default", database_url=url)  # an override wins
    assert query(url, "SELECT queue FROM zart_execution_runs WHERE id = %s", (other.id,)) == [("default",)]


def test_an_idle_non_autocommit_connection_begins_the_callers_transaction(fresh_database_url):
    """A Django atomic() block before its first query, or a fresh psycopg connection: Zart's statement
    begins the transaction, and the execution exists only once the caller commits."""
    url = fresh_database_url
    with psycopg.connect(url) as conn:
        handle = zart.start(core_app.three_steps, {"n": 1}, connection=conn)
        assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == 0
        conn.commit()
    assert query(url, "SELECT id FROM zart_execution_runs") == [(handle.id,)]


def test_a_failed_start_leaves_nothing_in_the_callers_transaction(fresh_database_url):
    url = fresh_database_url
    zart.start(core_app.three_steps, {"n": 1}, id="owned-by-three-steps", database_url=url)
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (7)")
        with pytest.raises(zart.DuplicateExecution):
            zart.start_many(
                queues_app.unqueued,
                [{"ms": 1}, {"ms": 1}],
                ids=["fresh-w", "owned-by-three-steps"],
                connection=conn,
            )
        # The caller's transaction goes on (its own work kept), and commits without the half start.
    assert query(url, "SELECT id FROM orders") == [(7,)]
    assert query(url, "SELECT id FROM zart_execution_runs ORDER BY id") == [("owned-by-three-steps",)]
    assert scalar(url, "SELECT count(*) FROM zart_tasks") == 1


@pytest.mark.parametrize("nothing", [0, 0.0, "0s", "0ms", timedelta(0)])
def test_a_delay_of_nothing_begins_now(database_url, nothing):
    handle = zart.start(core_app.three_steps, {"n": 1}, delay=nothing, database_url=database_url)
    assert scalar(
        database_url, "SELECT run_at <= now() FROM zart_tasks WHERE execution_id = %s", (handle.id,)
    )
