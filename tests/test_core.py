"""Acceptance 1 and the basics: workflows complete with the right result, each side effect once."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest

import zart
from zart import waiting

from .apps import core_app
from .helpers import query, scalar, wait_until


def effects(url: str, execution_id: str) -> list[tuple[str, int]]:
    return query(
        url,
        "SELECT step_key, count(*) FROM test_effects WHERE execution_id = %s"
        " GROUP BY step_key ORDER BY step_key",
        (execution_id,),
    )


def test_three_step_workflow_completes_with_each_side_effect_once(database_url, worker):
    handle = zart.start(core_app.three_steps, {"n": 4}, database_url=database_url)
    result = handle.result(timeout=30)
    assert result == {"value": 10, "context": f"{handle.id}/describe#1"}
    assert handle.status() == "completed"
    assert effects(database_url, handle.id) == [
        ("add-one#1", 1),
        ("describe#1", 1),
        ("double#1", 1),
    ]
    steps = query(
        database_url,
        "SELECT step_key, seq, status, output::text FROM zart_steps WHERE execution_id = %s ORDER BY seq",
        (handle.id,),
    )
    assert steps == [
        ("add-one#1", 0, "completed", "5"),
        ("double#1", 1, "completed", "10"),
        ("describe#1", 2, "completed", f'{{"value":10,"context":"{handle.id}/describe#1"}}'),
    ]
    attempts = query(
        database_url,
        "SELECT step_key, attempt, outcome FROM zart_step_attempts WHERE execution_id = %s"
        " ORDER BY started_at",
        (handle.id,),
    )
    assert attempts == [
        ("add-one#1", 1, "succeeded"),
        ("double#1", 1, "succeeded"),
        ("describe#1", 1, "succeeded"),
    ]
    # The finished execution leaves no task behind.
    assert scalar(database_url, "SELECT count(*) FROM zart_tasks WHERE execution_id = %s", (handle.id,)) == 0


def test_workflow_started_by_name_and_fetched_by_id(database_url, worker):
    execution_id = f"by-name-{uuid.uuid4()}"
    handle = zart.start("three-steps", {"n": 1}, id=execution_id, database_url=database_url)
    assert handle.id == execution_id
    assert handle.result(timeout=30)["value"] == 4
    again = zart.get(execution_id, database_url=database_url)
    info = again.info()
    assert (info.workflow, info.status, info.input) == ("three-steps", "completed", {"n": 1})
    assert info.started_at is not None and info.finished_at >= info.started_at


def test_workflow_without_input(database_url, worker):
    assert zart.start(core_app.no_input, database_url=database_url).result(timeout=30) == "nothing needed"


def test_uncaught_exception_fails_the_execution(database_url, worker):
    handle = zart.start(core_app.fails, {"why": "bad luck"}, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed, match="RuntimeError: boom: bad luck") as failure:
        handle.result(timeout=30)
    assert "Traceback" in failure.value.traceback
    assert handle.status() == "failed"


def test_failed_step_raises_step_failed_which_the_workflow_may_catch(database_url, worker):
    handle = zart.start(core_app.catches, {}, database_url=database_url)
    assert handle.result(timeout=30) == {"caught": "KeyError", "message": "'missing-thing'"}
    row = query(
        database_url,
        "SELECT status, error->>'type' FROM zart_steps WHERE execution_id = %s",
        (handle.id,),
    )
    assert row == [("failed", "KeyError")]


@zart.step("square")
def square(x: int) -> int:
    return x * x


@zart.step("async-square")
async def async_square(x: int) -> int:
    return x * x


def test_steps_outside_a_workflow_are_plain_calls():
    import trio

    assert square(3) == 9
    assert trio.run(async_square, 4) == 16
    with pytest.raises(zart.ZartError, match="only available inside a workflow or step"):
        zart.context()


async def _async_start(url: str) -> tuple[str, object]:
    handle = await zart.astart(core_app.three_steps, {"n": 2}, database_url=url)
    return await handle.astatus(), await handle.aresult(timeout=30)


def test_async_twins_work_under_trio_and_asyncio(database_url, worker):
    import asyncio

    import trio

    for outcome in (trio.run(_async_start, database_url), asyncio.run(_async_start(database_url))):
        status, result = outcome
        assert status in {"pending", "running", "completed"}
        assert result["value"] == 6


def _count_status_reads(monkeypatch) -> list[float]:
    """The moments result() reads the execution's status, from now on."""
    reads: list[float] = []
    original = zart.ExecutionHandle._status_row

    def counted(self):
        reads.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(zart.ExecutionHandle, "_status_row", counted)
    return reads


def test_result_waits_for_the_end_by_notification_not_by_polling(database_url, worker, tmp_path, monkeypatch):
    """result() is woken by the execution's final commit (NOTIFY zart_done): while the execution
    runs for 1.5 s it reads the status about once a second (its fallback), not every few ms, and it
    returns as soon as the execution ends."""
    gate = tmp_path / "gate"
    handle = zart.start(core_app.gated, {"n": 1, "gate": str(gate)}, database_url=database_url)
    reads = _count_status_reads(monkeypatch)
    threading.Timer(1.5, gate.touch).start()
    assert handle.result(timeout=30)[2] == "opened"
    returned = datetime.now(UTC)
    assert len(reads) <= 4, len(reads)  # polling with back-off would read ~20 times in 1.5 s
    finished = handle.info().finished_at
    assert (returned - finished).total_seconds() < 0.5


@pytest.mark.parametrize("size", [10, 20_000], ids=["in-the-notification", "read-back"])
def test_the_end_notification_carries_the_result_when_it_fits(
    database_url, worker, tmp_path, monkeypatch, size
):
    """A result that fits in a NOTIFY comes with the end's notification: result() reads the status
    once (before it waits) and not again; a bigger one is read back. Either way the value is exact
    (quotes, backslashes, newlines and non-ASCII text survive the notification's JSON)."""
    monkeypatch.setattr(waiting, "FALLBACK_SECONDS", 30.0)  # no periodic read within the test
    value = {"text": ('"\\\né' * size)[:size], "n": size}
    gate = tmp_path / "gate"
    handle = zart.start(core_app.gated_echo, {"gate": str(gate), "value": value}, database_url=database_url)
    reads = _count_status_reads(monkeypatch)
    threading.Timer(0.2, gate.touch).start()
    assert handle.result(timeout=30) == value
    assert len(reads) == (1 if size == 10 else 2)


def test_a_done_payload_is_read_whatever_its_shape():
    assert waiting.parse_done('["e-1", "completed", "5", null]') == ("e-1", ("completed", "5", None))
    assert waiting.parse_done('["e-1"]') == ("e-1", None)  # too big to carry: read it back
    assert waiting.parse_done("e-1") == ("e-1", None)  # a bare id, from an older engine
    assert waiting.parse_done("[not json") == ("[not json", None)


def test_result_still_returns_when_its_listener_connection_is_cut(database_url, worker, tmp_path):
    """The notification is a hint: with the listening connection killed while result() waits,
    result() still returns (the listener reconnects; waiters read the status themselves meanwhile,
    at least once a second), and no wait hangs on a lost notification."""
    gate = tmp_path / "gate"
    handle = zart.start(core_app.gated, {"n": 2, "gate": str(gate)}, database_url=database_url)
    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(handle.result(timeout=30)))
    waiter.start()
    listening = (
        "SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN zart_done' AND datname = current_database()"
    )
    pids = wait_until(lambda: query(database_url, listening), what="result()'s listener")
    for (pid,) in pids:
        scalar(database_url, "SELECT pg_terminate_backend(%s)", (pid,))
    gate.touch()
    waiter.join(30)
    assert outcome and outcome[0][2] == "opened"


@pytest.mark.parametrize("library", ["trio", "asyncio"])
def test_many_aresult_waits_hold_no_threads(database_url, worker, tmp_path, library):
    """aresult() waits on the shared listener in the caller's loop: 100 executions awaited at once
    hold no thread (a thread per wait would be 100, or trio's 40 with the rest queued behind them),
    and each returns once its execution ends."""
    import asyncio

    import trio

    gate = tmp_path / "gate"
    handles = [
        zart.start(core_app.gated, {"n": n, "gate": str(gate)}, database_url=database_url) for n in range(100)
    ]
    threads_while_waiting: list[int] = []

    async def check_and_open(sleep) -> None:
        await sleep(0.5)  # every aresult() is parked on its signal by now (their reads take ms)
        threads_while_waiting.append(_threads_in_client_code())
        gate.touch()

    async def under_trio() -> list[object]:
        results: list[object] = []

        async def one(handle) -> None:
            results.append(await handle.aresult(timeout=60))

        async with trio.open_nursery() as nursery:
            for handle in handles:
                nursery.start_soon(one, handle)
            nursery.start_soon(check_and_open, trio.sleep)
        return results

    async def under_asyncio() -> list[object]:
        waits = asyncio.gather(*(handle.aresult(timeout=60) for handle in handles))
        await check_and_open(asyncio.sleep)
        return await waits

    results = trio.run(under_trio) if library == "trio" else asyncio.run(under_asyncio())
    assert sorted(r[0] for r in results) == list(range(1, 101))  # add_one(n)
    assert all(r[2] == "opened" for r in results)
    assert threads_while_waiting == [0]


def _threads_in_client_code() -> int:
    """Threads whose stack is in zart/client.py right now (a wait held in a thread would be)."""
    import sys

    held = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_filename.endswith("zart/client.py"):
                held += 1
                break
            frame = frame.f_back
    return held
