"""Group commit for starts (issue 14): concurrent `start`/`astart` calls of one process share one
statement and one transaction, and each caller still gets its own answer (its id, its error)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import trio

import zart
from zart import group_start

from .apps import core_app
from .helpers import query, scalar, wait_until


@contextmanager
def flusher_held(url: str) -> Iterator[None]:
    """Keep the process's flusher busy: a lone start waits on a lock of the executions table, so the
    starts made meanwhile all wait for the next group. On exit the lock goes and both groups commit."""
    opener: list[zart.ExecutionHandle] = []
    zart.start(core_app.three_steps, {"n": 0}, database_url=url)  # the pool and flusher exist
    with psycopg.connect(url) as locker:
        locker.execute("LOCK TABLE zart_execution_runs IN EXCLUSIVE MODE")
        thread = threading.Thread(
            target=lambda: opener.append(zart.start(core_app.three_steps, {"n": -1}, database_url=url))
        )
        thread.start()
        wait_until(
            lambda: (
                scalar(
                    url,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'",
                )
                >= 1
            ),
            10,
            what="the flusher waiting on the lock",
        )
        yield
    thread.join(10)
    assert opener and opener[0].created


def _transactions(url: str, ids: list[str]) -> int:
    return scalar(
        url, "SELECT count(DISTINCT xmin::text) FROM zart_execution_runs WHERE id = ANY(%s)", (ids,)
    )


def test_concurrent_astarts_share_one_transaction(fresh_database_url):
    url = fresh_database_url
    handles: list[zart.ExecutionHandle] = []

    async def start(n: int) -> None:
        handles.append(await zart.astart(core_app.three_steps, {"n": n}, database_url=url))

    async def starts() -> None:
        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(start, n)

    with flusher_held(url):
        runner = threading.Thread(target=trio.run, args=(starts,))
        runner.start()
        wait_until(lambda: _waiting(url) == 200, 10, what="200 starts in the group")
    runner.join(20)
    ids = [h.id for h in handles]
    assert len(ids) == 200 and len(set(ids)) == 200 and all(h.created for h in handles)
    assert _transactions(url, ids) == 1
    inputs = {row[0] for row in query(url, "SELECT input::text FROM zart_execution_runs")}
    assert {f'{{"n":{n}}}' for n in range(200)} <= inputs


def test_asyncio_threads_and_trio_callers_all_get_their_own_answers(fresh_database_url):
    url = fresh_database_url
    from_asyncio: list[zart.ExecutionHandle] = []
    from_threads: list[zart.ExecutionHandle] = []

    async def asyncio_starts() -> None:
        from_asyncio.extend(
            await asyncio.gather(
                *(
                    zart.astart(core_app.three_steps, {"n": n}, id=f"aio-{n}", database_url=url)
                    for n in range(50)
                )
            )
        )

    def thread_start(n: int) -> None:
        from_threads.append(zart.start(core_app.three_steps, {"n": n}, id=f"thr-{n}", database_url=url))

    threads = [threading.Thread(target=thread_start, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    asyncio.run(asyncio_starts())
    for thread in threads:
        thread.join(20)
    assert sorted(h.id for h in from_asyncio) == sorted(f"aio-{n}" for n in range(50))
    assert sorted(h.id for h in from_threads) == sorted(f"thr-{n}" for n in range(20))
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE kind = 'workflow'") == 70


def test_one_id_started_by_many_callers_at_once_is_created_once(fresh_database_url):
    url = fresh_database_url
    answers: list[zart.ExecutionHandle] = []

    def start() -> None:
        answers.append(zart.start(core_app.three_steps, {"n": 1}, id="same-id", database_url=url))

    with flusher_held(url):
        threads = [threading.Thread(target=start) for _ in range(10)]
        for thread in threads:
            thread.start()
        wait_until(lambda: _waiting(url) == 10, 10, what="10 starts in the group")
    for thread in threads:
        thread.join(20)
    assert [h.id for h in answers] == ["same-id"] * 10
    assert sorted(h.created for h in answers) == [False] * 9 + [True]
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE execution_id = 'same-id'") == 1


def _waiting(url: str) -> int:
    return group_start.group_for(url).waiting()


def test_a_start_that_fails_in_a_group_fails_alone(fresh_database_url):
    """A duplicate id of another workflow, and a row PostgreSQL refuses (a trigger here), fail their
    own callers only: the group is retried start by start."""
    url = fresh_database_url
    zart.start(core_app.three_steps, {"n": 1}, id="taken", database_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'poison refused'; END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON zart_execution_runs
            FOR EACH ROW WHEN (NEW.id = 'poison') EXECUTE FUNCTION refuse_poison();
            """
        )
    outcomes: dict[str, object] = {}

    def start(workflow, execution_id: str) -> None:
        try:
            outcomes[execution_id] = zart.start(workflow, {"n": 2}, id=execution_id, database_url=url)
        except Exception as exc:
            outcomes[execution_id] = exc

    ids = [f"fine-{n}" for n in range(10)]
    with flusher_held(url):
        threads = [threading.Thread(target=start, args=(core_app.three_steps, i)) for i in ids]
        threads.append(threading.Thread(target=start, args=(core_app.gated, "taken")))
        threads.append(threading.Thread(target=start, args=(core_app.three_steps, "poison")))
        for thread in threads:
            thread.start()
        wait_until(lambda: _waiting(url) == 12, 10, what="12 starts in the group")
    for thread in threads:
        thread.join(20)
    assert isinstance(outcomes["taken"], zart.DuplicateExecution)
    assert isinstance(outcomes["poison"], psycopg.Error) and "poison refused" in str(outcomes["poison"])
    assert all(isinstance(outcomes[i], zart.ExecutionHandle) and outcomes[i].created for i in ids)
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE id = 'poison'") == 0
    assert (
        scalar(url, "SELECT workflow FROM zart_execution_runs WHERE id = 'taken'")
        == core_app.three_steps.name
    )


@pytest.mark.parametrize("library", ["trio", "asyncio"])
def test_a_lone_async_start_is_answered_at_once(fresh_database_url, library):
    url = fresh_database_url

    async def one() -> str:
        return (await zart.astart(core_app.three_steps, {"n": 5}, database_url=url)).id

    execution_id = trio.run(one) if library == "trio" else asyncio.run(one())
    assert scalar(url, "SELECT status FROM zart_execution_runs WHERE id = %s", (execution_id,)) == "pending"
