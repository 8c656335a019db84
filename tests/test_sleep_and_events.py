"""Durable sleep and external events (issue 4), with real workers and a real SIGKILL."""

from __future__ import annotations

import time
import uuid

import pytest

import zart
from examples import approval

from .apps import events_app
from .helpers import WorkerProcess, query, run_cli, scalar, wait_until


def effect_count(url: str, execution_id: str, step_key: str) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM test_effects WHERE execution_id = %s AND step_key = %s",
        (execution_id, step_key),
    )


def test_sleep_completes_after_its_duration_and_holds_no_task_meanwhile(database_url, worker):
    began = time.monotonic()
    handle = zart.start(events_app.sleeper, {"seconds": 1}, database_url=database_url)
    wait_until(lambda: handle.status() == "sleeping", what="the execution to sleep")
    assert query(
        database_url,
        "SELECT claimed_by IS NULL, run_at > now() FROM zart_tasks WHERE execution_id = %s",
        (handle.id,),
    ) == [(True, True)]
    assert handle.result(timeout=30) == ["before", "after"]
    assert time.monotonic() - began >= 1.0
    rows = query(
        database_url,
        "SELECT step_key, kind, status, wake_at <= finished_at FROM zart_steps"
        " WHERE execution_id = %s ORDER BY seq",
        (handle.id,),
    )
    assert rows == [
        ("before-sleep#1", "step", "completed", None),
        ("sleep:nap#1", "sleep", "completed", True),
        ("after-sleep#1", "step", "completed", None),
    ]


def test_sigkill_while_sleeping_then_restart_after_the_deadline(database_url, subprocess_env):
    first = WorkerProcess(subprocess_env, app="tests.apps.events_app")
    try:
        first.wait_started()
        handle = zart.start(events_app.sleeper, {"seconds": 1}, database_url=database_url)
        wait_until(lambda: handle.status() == "sleeping", what="the execution to sleep")
        first.kill()
    finally:
        first.stop()
    wake_at = scalar(
        database_url,
        "SELECT wake_at FROM zart_steps WHERE execution_id = %s AND step_key = 'sleep:nap#1'",
        (handle.id,),
    )
    wait_until(lambda: scalar(database_url, "SELECT now() > %s", (wake_at,)), what="the deadline to pass")
    second = WorkerProcess(subprocess_env, app="tests.apps.events_app")
    try:
        second.wait_started()
        assert handle.result(timeout=30) == ["before", "after"]
    finally:
        second.stop()
    # The sleep was not repeated: its deadline is the one fixed before the crash.
    assert (
        scalar(
            database_url,
            "SELECT wake_at FROM zart_steps WHERE execution_id = %s AND step_key = 'sleep:nap#1'",
            (handle.id,),
        )
        == wake_at
    )
    finished = handle.info().finished_at
    assert (finished - wake_at).total_seconds() < 5
    assert effect_count(database_url, handle.id, "before-sleep#1") == 1


def test_event_sent_before_the_wait_is_kept_and_consumed(database_url, worker):
    execution_id = f"early-{uuid.uuid4()}"
    # Started and sent in one go: the event may be stored before the workflow reaches its wait.
    handle = zart.start(events_app.wait_for_one, {}, id=execution_id, database_url=database_url)
    assert zart.send_event(execution_id, "go", {"n": 1}, database_url=database_url) is True
    assert handle.result(timeout=30) == {"n": 1}
    assert query(
        database_url, "SELECT consumed_by FROM zart_events WHERE execution_id = %s", (execution_id,)
    ) == [("event:go#1",)]


def test_an_event_sent_before_the_first_claim_is_loaded_with_it(fresh_database_url, monkeypatch):
    """The claim that begins an execution loads no history (it has none), but the events already
    sent to it are loaded: the wait consumes the event in that first run, without parking."""
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", fresh_database_url)
    handle = zart.start(events_app.wait_for_one, {}, database_url=fresh_database_url)
    assert zart.send_event(handle.id, "go", {"n": 2}, database_url=fresh_database_url) is True
    with zart.Worker(fresh_database_url, poll_interval="0.2s") as worker:
        assert handle.result(timeout=30) == {"n": 2}
        # The end's notification can reach the caller before the runner counts its run.
        wait_until(lambda: worker.executions_finished >= 1, what="the run counted")
    assert worker.executions_finished == 1  # one run to the end: no park for the event, no re-claim


def test_event_sent_while_waiting_wakes_the_execution(database_url, worker):
    handle = zart.start(events_app.wait_for_one, {}, database_url=database_url)
    wait_until(lambda: handle.status() == "waiting", what="the wait")
    assert query(database_url, "SELECT claimed_by FROM zart_tasks WHERE execution_id = %s", (handle.id,)) == [
        (None,)
    ]
    began = time.monotonic()
    zart.send_event(handle.id, "go", ["payload", 2], database_url=database_url)
    assert handle.result(timeout=30) == ["payload", 2]
    assert time.monotonic() - began < 2  # woken by the delivery, not by a poll


def test_an_event_the_execution_does_not_wait_for_yet_is_kept_without_waking_it(database_url, worker):
    handle = zart.start(events_app.wait_for_one, {"event": "finish"}, database_url=database_url)
    wait_until(lambda: handle.status() == "waiting", what="the wait")
    assert zart.send_event(handle.id, "unrelated", {"n": 1}, database_url=database_url) is True
    # Still parked: no replay for an event nobody waits for yet.
    assert query(
        database_url,
        "SELECT claimed_by, run_at = 'infinity' FROM zart_tasks WHERE execution_id = %s",
        (handle.id,),
    ) == [(None, True)]
    zart.send_event(handle.id, "finish", "done", database_url=database_url)
    assert handle.result(timeout=30) == "done"
    assert query(
        database_url,
        "SELECT name, consumed_by FROM zart_events WHERE execution_id = %s ORDER BY id",
        (handle.id,),
    ) == [("unrelated", None), ("finish", "event:finish#1")]


def test_two_waits_take_two_events_in_the_order_sent(database_url, worker):
    execution_id = f"two-{uuid.uuid4()}"
    handle = zart.start(events_app.wait_for_two, id=execution_id, database_url=database_url)
    zart.send_event(execution_id, "item", "first", database_url=database_url)
    zart.send_event(execution_id, "item", "second", database_url=database_url)
    assert handle.result(timeout=30) == ["first", "second"]


def test_a_repeated_key_is_delivered_once(database_url, worker):
    handle = zart.start(events_app.wait_for_two, database_url=database_url)
    assert zart.send_event(handle.id, "item", "a", key="k1", database_url=database_url) is True
    assert zart.send_event(handle.id, "item", "a-again", key="k1", database_url=database_url) is False
    assert zart.send_event(handle.id, "item", "b", key="k2", database_url=database_url) is True
    assert handle.result(timeout=30) == ["a", "b"]
    assert scalar(database_url, "SELECT count(*) FROM zart_events WHERE execution_id = %s", (handle.id,)) == 2


def test_wait_times_out_with_event_timeout(database_url, worker):
    began = time.monotonic()
    handle = zart.start(events_app.wait_for_one, {"timeout": "300ms"}, database_url=database_url)
    assert handle.result(timeout=30) == {"timed_out": "no event 'go' arrived before the wait's timeout"}
    assert time.monotonic() - began >= 0.3
    assert query(
        database_url,
        "SELECT status, error->>'type' FROM zart_steps WHERE execution_id = %s",
        (handle.id,),
    ) == [("failed", "EventTimeout")]


def test_event_for_unknown_or_finished_execution_is_a_clear_error(database_url, worker):
    with pytest.raises(zart.ExecutionNotFound, match="no execution with id 'nobody'"):
        zart.send_event("nobody", "go", database_url=database_url)
    handle = zart.start(events_app.wait_for_one, {"timeout": "10ms"}, database_url=database_url)
    handle.result(timeout=30)
    with pytest.raises(zart.ExecutionFinished, match="it is already completed; the event was not stored"):
        zart.send_event(handle.id, "go", database_url=database_url)
    assert scalar(database_url, "SELECT count(*) FROM zart_events WHERE execution_id = %s", (handle.id,)) == 0
    with pytest.raises(zart.SerializationError, match="the payload of event 'go'"):
        zart.send_event(handle.id, "go", object(), database_url=database_url)


def test_send_event_cli(database_url, worker, subprocess_env):
    handle = zart.start(events_app.wait_for_one, {"event": "finish"}, database_url=database_url)
    sent = run_cli(
        "send-event", handle.id, "note", "--payload", '{"via": "cli"}', "--key", "x", env=subprocess_env
    )
    assert (sent.returncode, sent.stdout.strip()) == (0, "delivered")
    again = run_cli("send-event", handle.id, "note", "--key", "x", env=subprocess_env)
    assert (again.returncode, again.stdout.strip()) == (0, "already delivered (key 'x')")
    finish = run_cli("send-event", handle.id, "finish", "--payload", '{"via": "cli"}', env=subprocess_env)
    assert finish.returncode == 0, finish.stderr
    assert handle.result(timeout=30) == {"via": "cli"}
    bad = run_cli("send-event", "nobody", "go", "--payload", "{oops", env=subprocess_env)
    assert bad.returncode == 1 and "--payload is not valid JSON" in bad.stderr
    missing = run_cli("send-event", "nobody", "go", env=subprocess_env)
    assert missing.returncode == 1 and "no execution with id 'nobody'" in missing.stderr


def test_approval_example_approved_and_expired(database_url, worker):
    approved = zart.start(
        approval.expense_approval, {"expense_id": "e-1", "amount": 120}, database_url=database_url
    )
    wait_until(lambda: approved.status() == "waiting", what="the approval wait")
    zart.send_event(approved.id, "approved", {"by": "alice"}, database_url=database_url)
    assert approved.result(timeout=30) == {"status": "paid", "receipt": "paid e-1, approved by alice"}

    expired = zart.start(
        approval.expense_approval,
        {"expense_id": "e-2", "amount": 5, "timeout": "200ms"},
        database_url=database_url,
    )
    assert expired.result(timeout=30) == {"status": "expired", "expense_id": "e-2"}


def test_thousand_executions_each_released_by_one_event(fresh_database_url, monkeypatch):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    with zart.Worker(url, concurrency=500, batch=200, lease="10s"):
        handles = zart.start_many(events_app.released_by_event, [None] * 1000, database_url=url)
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status = 'waiting'") == 1000,
            timeout=60,
            what="all 1000 executions to wait",
        )
        for index, handle in enumerate(handles):
            zart.send_event(handle.id, "release", index, database_url=url)
        wait_until(
            lambda: (
                scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'") == 1000
            ),
            timeout=60,
            what="all 1000 executions to complete",
        )
    assert [h.result(timeout=1) for h in handles[:3]] == [0, 1, 2]
    assert scalar(url, "SELECT count(*) FROM test_effects") == 1000
    assert scalar(url, "SELECT count(DISTINCT execution_id) FROM test_effects") == 1000
    assert scalar(url, "SELECT count(*) FROM zart_events WHERE consumed_by IS NULL") == 0


def _claimed_ahead(url: str, execution_id: str) -> bool:
    """Whether the sleeping execution's task is claimed before the sleep's moment."""
    return query(
        url,
        "SELECT t.claimed_by IS NOT NULL AND now() < s.wake_at FROM zart_tasks t"
        " JOIN zart_steps s ON s.execution_id = t.execution_id AND s.kind = 'sleep'"
        " WHERE t.execution_id = %s",
        (execution_id,),
    ) == [(True,)]


def _after_sleep_lateness(url: str, execution_id: str) -> float:
    """Seconds from the sleep's deadline to the start of the step after it (events_app.sleeper)."""
    return scalar(
        url,
        "SELECT extract(epoch FROM a.started_at - s.wake_at)::float8 FROM zart_steps s"
        " JOIN zart_step_attempts a ON a.execution_id = s.execution_id AND a.step_key = 'after-sleep#1'"
        " WHERE s.execution_id = %s AND s.kind = 'sleep'",
        (execution_id,),
    )


def test_a_sleep_is_claimed_ahead_and_resumes_at_its_moment_not_before(database_url, monkeypatch):
    """Timers are claimed up to `lookahead` before their moment (issue 14), so the execution is
    loaded and waiting in the worker when the sleep ends; the step after the sleep still never
    starts before the sleep's deadline."""
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", database_url)
    with zart.Worker(database_url, lease="5s", poll_interval="5s", lookahead="1.5s") as worker:
        handle = zart.start(events_app.sleeper, {"seconds": 3}, database_url=database_url)
        wait_until(lambda: handle.status() == "sleeping", what="the execution to sleep")
        wait_until(
            lambda: _claimed_ahead(database_url, handle.id),
            10,
            interval=0.02,
            what="the sleeping task claimed before its moment",
        )
        assert handle.result(timeout=30) == ["before", "after"]
        wait_until(lambda: worker.executions_finished >= 2, what="both runs counted")
    late = _after_sleep_lateness(database_url, handle.id)
    assert 0 <= late < 1.0, late
    # Two runs: to the sleep, and from its moment to the end. A wake-up placed before the moment
    # would find the sleep not over and go back to sleep: a third.
    assert worker.executions_finished == 2


def test_an_event_wait_with_a_timeout_is_not_claimed_ahead(database_url, monkeypatch):
    """An event can end a wait before its timeout: a wait's task is never claimed ahead (it would sit
    in a worker deaf to the event), so an event sent within the lookahead of the timeout is taken."""
    with zart.Worker(database_url, lease="5s", poll_interval="5s", lookahead="2s"):
        handle = zart.start(events_app.wait_for_one, {"timeout": "2.5s"}, database_url=database_url)
        wait_until(lambda: handle.status() == "waiting", what="the execution to wait")
        # Half a second into the lookahead of the timeout: a timer would have been claimed by now.
        wait_until(
            lambda: scalar(
                database_url,
                "SELECT now() > wake_at - interval '1.5 s' FROM zart_steps WHERE execution_id = %s",
                (handle.id,),
            ),
            what="the lookahead's window",
        )
        assert query(
            database_url, "SELECT claimed_by IS NULL FROM zart_tasks WHERE execution_id = %s", (handle.id,)
        ) == [(True,)]
        zart.send_event(handle.id, "go", {"ok": 1}, database_url=database_url)
        assert handle.result(timeout=30) == {"ok": 1}


def test_sigkill_of_a_worker_holding_a_sleep_claimed_ahead(database_url, subprocess_env):
    """A worker killed while it holds a sleep it claimed ahead of its moment: another worker
    resumes the execution after the lease, the sleep still ends at its own deadline (never early),
    and neither step runs twice."""
    first = WorkerProcess(subprocess_env, "--lookahead", "2s", app="tests.apps.events_app")
    try:
        first.wait_started()
        handle = zart.start(events_app.sleeper, {"seconds": 3}, database_url=database_url)
        wait_until(
            lambda: _claimed_ahead(database_url, handle.id),
            10,
            what="the sleep claimed ahead of its moment",
        )
        first.kill()
    finally:
        first.stop()
    second = WorkerProcess(subprocess_env, app="tests.apps.events_app")
    try:
        second.wait_started()
        assert handle.result(timeout=30) == ["before", "after"]
    finally:
        second.stop()
    assert effect_count(database_url, handle.id, "before-sleep#1") == 1
    assert effect_count(database_url, handle.id, "after-sleep#1") == 1
    late = _after_sleep_lateness(database_url, handle.id)
    assert late >= 0, late
