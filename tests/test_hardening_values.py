"""Hardening, values: one execution's bad data fails that execution alone, with a clear error.

Regression tests for items 1, 4 and 6 of the hardening issue (each failed on commit 5b3cc6c).
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import pytest
import trio

import zart
from zart import registry, serde
from zart.completer import Completer, Fragment, FragmentRejected
from zart.db import open_pool
from zart.durations import parse_duration

from .apps import hardening_app as app
from .helpers import query, scalar


def _effects(url: str, execution_id: str, step_key: str) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM test_effects WHERE execution_id = %s AND step_key = %s",
        (execution_id, step_key),
    )


def _start_batch(url: str, workflow, poisoned: dict) -> tuple[list, float]:
    """31 executions whose first step ends at the same instant: their checkpoints share batches."""
    at = time.time() + 1.5
    handles = [zart.start(workflow, {"at": at, **poisoned}, database_url=url)]
    handles += [zart.start(app.batchmate, {"at": at, "poison": ""}, database_url=url) for _ in range(30)]
    return handles, at


@pytest.mark.parametrize("poison", ["nul", "surrogate", "unprintable"])
def test_a_hostile_error_text_harms_nobody(poison, worker, database_url):
    """Items 1 and 4: the error is stored with visible escapes; the 30 batch-mates are untouched."""
    handles, _ = _start_batch(database_url, app.batchmate, {"poison": poison})
    results = [handle.result(timeout=30) for handle in handles]
    assert results[1:] == ["done"] * 30
    assert results[0].startswith("caught ")
    if poison == "nul":
        assert results[0] == "caught ValueError: customer note: 'abc\\x00def'"
    if poison == "surrogate":
        assert results[0] == "caught ValueError: cannot parse caf\\udce9.csv"
    if poison == "unprintable":
        assert results[0].startswith("caught UnprintableError: <the UnprintableError could not")
    # Every execution's step ran once: nothing was failed, abandoned or run again.
    for handle in handles:
        assert _effects(database_url, handle.id, "until#1") == 1
    ids = [h.id for h in handles]
    outcomes = query(
        database_url,
        "SELECT outcome, count(*) FROM zart_step_attempts WHERE execution_id = ANY(%s) GROUP BY 1",
        (ids,),
    )
    assert dict(outcomes) == {"succeeded": 30 + 30, "failed": 1}
    assert worker._thread is not None and worker._thread.is_alive()


def test_a_surrogate_in_a_retried_step_fails_that_execution_only(worker, database_url):
    """Item 4: with a retry policy the text went through psycopg and killed the completer."""
    handle = zart.start(app.surrogate_retry, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failure:
        handle.result(timeout=30)
    assert failure.value.error_type == "StepFailed"
    assert "caf\\udce9.csv" in failure.value.message
    assert _effects(database_url, handle.id, "surrogate-retried#1") == 3  # 1 try + 2 retries
    messages = query(
        database_url,
        "SELECT error_message FROM zart_step_attempts WHERE execution_id = %s ORDER BY attempt",
        (handle.id,),
    )
    assert [m for (m,) in messages] == ["cannot parse caf\\udce9.csv"] * 3
    # The worker goes on with other executions.
    assert zart.start(app.many_steps, 3, database_url=database_url).result(timeout=30) == 3


def test_an_out_of_range_sleep_fails_its_execution_alone(worker, database_url):
    """Item 1: `zart.sleep(..., "1000000000000d")` failed every batch-mate with
    DatetimeFieldOverflow; it is refused at the call, in that execution."""
    handles, _ = _start_batch(database_url, app.long_sleeper, {"duration": "1000000000000d"})
    with pytest.raises(zart.WorkflowFailed) as failure:
        handles[0].result(timeout=30)
    assert failure.value.error_type == "ValueError"
    assert "duration of sleep 'renewal'" in failure.value.message
    assert "at most 100 years" in failure.value.message
    assert [h.result(timeout=30) for h in handles[1:]] == ["done"] * 30
    assert all(_effects(database_url, h.id, "until#1") == 1 for h in handles)


def test_durations_and_back_offs_stay_in_the_databases_range():
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration("1000000000000d")
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration(float("inf"))
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration(float("nan"))
    assert parse_duration("36500d") == 36500 * 86400
    # 2 ** 5000 overflows a float; the back-off is capped instead of crashing the runner.
    policy = zart.Retry.exponential(5000, "1s")
    assert policy.delay_before_retry(5000) == 100 * 365 * 86400.0


def test_safe_text_keeps_every_character_visible():
    assert serde.safe_text("plain") == "plain"
    assert serde.safe_text("a\x00b") == "a\\x00b"
    assert serde.safe_text("caf\udce9") == "caf\\udce9"
    assert serde.safe_text("café \x00") == "café \\x00"


def _claimed_tasks(url: str, count: int) -> list[tuple[str, int]]:
    """`count` executions, each with a task claimed by worker 'w' (claims = 1)."""
    prefix = f"bisect-{time.monotonic_ns()}"
    ids = [f"{prefix}-{i}" for i in range(count)]
    query(
        url,
        "INSERT INTO zart_execution_runs (id, workflow, status)"
        " SELECT unnest(%s::text[]), 'wf', 'running' RETURNING id",
        (ids,),
    )
    rows = query(
        url,
        "INSERT INTO zart_tasks (execution_id, kind, run_at, claimed_by, claims) "
        "SELECT unnest(%s::text[]), 'workflow', now() + interval '1 minute', 'w', 1"
        " RETURNING execution_id, id",
        (ids,),
    )
    return sorted(rows)


def test_the_completer_commits_a_batch_without_the_fragment_postgresql_refuses(database_url):
    """Item 1's mechanism: whatever slips past validation, PostgreSQL's refusal of one fragment
    reaches that fragment's runner alone; its 30 batch-mates are committed."""
    tasks = _claimed_tasks(database_url, 31)
    now = datetime.now(UTC)

    def fragment(execution_id: str, task_id: int, message: str) -> Fragment:
        return Fragment(
            execution_id,
            task_id,
            1,
            attempt_starts=[("s#1", 1, now)],
            attempt_ends=[("s#1", 1, now, "failed", "ValueError", message, "")],
            steps=[("s#1", 0, "step", "completed", '"ok"', None, 1, now, now, None)],
        )

    fragments = [fragment(eid, tid, "fine") for eid, tid in tasks]
    fragments[13] = fragment(*tasks[13], "raw \x00 byte")  # as if nothing had cleaned it
    outcomes: list[object] = [None] * len(fragments)

    async def main() -> None:
        pool = await trio.to_thread.run_sync(lambda: open_pool(database_url, max_size=2))
        completer = Completer(pool, trio.CapacityLimiter(2), "w")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(completer.run)

                async def commit(index: int) -> None:
                    try:
                        outcomes[index] = await completer.commit(fragments[index])
                    except FragmentRejected as exc:
                        outcomes[index] = exc

                async with trio.open_nursery() as runners:
                    for index in range(len(fragments)):
                        runners.start_soon(commit, index)
                nursery.cancel_scope.cancel()
        finally:
            pool.close()

    trio.run(main)
    assert isinstance(outcomes[13], FragmentRejected)
    # PostgreSQL's own words for the NUL it cannot store in text (the per-step writes travel as JSON)
    assert "\\u0000 cannot be converted to text" in str(outcomes[13])
    assert outcomes[:13] + outcomes[14:] == [True] * 30
    ids = [eid for eid, _ in tasks]
    stored = scalar(database_url, "SELECT count(*) FROM zart_steps WHERE execution_id = ANY(%s)", (ids,))
    assert stored == 30
    assert (
        scalar(database_url, "SELECT count(*) FROM zart_steps WHERE execution_id = %s", (tasks[13][0],)) == 0
    )


# -- item 6: the determinism check cannot be bypassed ----------------------------------------------


@zart.step("det-a")
async def det_a() -> str:
    await trio.to_thread.run_sync(app.record_effect)
    return "a"


@zart.step("det-b")
async def det_b() -> str:
    await trio.to_thread.run_sync(app.record_effect)
    return "b"


@zart.step("det-charge-card")
async def det_charge() -> str:
    await trio.to_thread.run_sync(app.record_effect)
    return "charged"


@zart.workflow("det-caught")
async def det_caught_v1() -> str:
    await det_a()
    await zart.wait_for_event("go")
    return "v1"


async def det_caught_v2() -> str:
    """Deployed while executions of v1 wait: its first step differs, and it catches everything."""
    with contextlib.suppress(Exception):
        await det_b()
    await zart.wait_for_event("go")
    await det_charge()  # past the divergence: must never run
    return "v2"


@zart.workflow("det-shorter")
async def det_shorter_v1() -> str:
    await det_a()
    await det_b()
    await zart.wait_for_event("go")
    return "v1"


async def det_shorter_v2() -> str:
    """Deployed while executions of v1 wait: steps removed from the code."""
    await det_a()
    return "v2"


def test_a_caught_divergence_runs_nothing_more_and_a_shorter_replay_fails(worker, database_url, monkeypatch):
    caught = zart.start(det_caught_v1, database_url=database_url)
    shorter = zart.start(det_shorter_v1, database_url=database_url)
    for handle in (caught, shorter):
        deadline = time.monotonic() + 30
        while handle.status() != "waiting":
            assert time.monotonic() < deadline, "the execution never reached its wait"
            time.sleep(0.02)
    monkeypatch.setitem(
        registry._workflows, "det-caught", registry.Workflow("det-caught", det_caught_v2, None, False)
    )
    monkeypatch.setitem(
        registry._workflows, "det-shorter", registry.Workflow("det-shorter", det_shorter_v2, None, False)
    )
    for handle in (caught, shorter):
        zart.send_event(handle.id, "go", database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as first:
        caught.result(timeout=30)
    assert first.value.error_type == "NonDeterminismError"
    assert "'det-b#1'" in first.value.message and "'det-a#1'" in first.value.message
    assert _effects(database_url, caught.id, "det-charge-card#1") == 0
    assert _effects(database_url, caught.id, "det-b#1") == 0
    with pytest.raises(zart.WorkflowFailed) as second:
        shorter.result(timeout=30)
    assert second.value.error_type == "NonDeterminismError"
    assert "'det-b#1' at position 2 was never reached" in second.value.message


def test_a_sleep_name_that_cannot_be_a_key_fails_at_the_call(worker, database_url):
    handle = zart.start(app.bad_sleep_name, "nap\x00time", database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failure:
        handle.result(timeout=30)
    assert failure.value.error_type == "ValueError"
    assert "the name of a sleep 'nap\\x00time' contains control characters" in failure.value.message
    assert handle.steps() == []  # nothing was recorded for it
