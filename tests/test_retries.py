"""Retry policies, timeouts and failures (issue 3), with real workers and a real SIGKILL."""

from __future__ import annotations

import datetime
import time

import pytest

import zart
from zart.retry import Retry

from .apps import retry_app
from .helpers import WorkerProcess, query, run_cli, wait_until


def attempts(url: str, execution_id: str) -> list[tuple]:
    return query(
        url,
        "SELECT step_key, attempt, outcome, error_type, error_message, started_at, finished_at,"
        " traceback FROM zart_step_attempts WHERE execution_id = %s ORDER BY attempt",
        (execution_id,),
    )


def test_exponential_back_off_then_success(database_url, worker):
    handle = zart.start(retry_app.retry_until_success, database_url=database_url)
    assert handle.result(timeout=30) == "succeeded on attempt 3"
    rows = attempts(database_url, handle.id)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (1, "failed", "ConnectionError"),
        (2, "failed", "ConnectionError"),
        (3, "succeeded", None),
    ]
    assert rows[0][4] == "transient failure on attempt 1"
    assert "Traceback" in rows[0][7] and "ConnectionError" in rows[0][7]
    starts = [r[5] for r in rows]
    assert starts[1] - starts[0] >= datetime.timedelta(milliseconds=100)
    assert starts[2] - starts[1] >= datetime.timedelta(milliseconds=200)


def test_always_failing_step_raises_step_failed_after_n_plus_one_attempts(database_url, worker):
    caught = zart.start(retry_app.fallback_on_failure, database_url=database_url)
    assert caught.result(timeout=30) == {
        "fallback": True,
        "error_type": "ValueError",
        "message": "the service is down",
    }
    assert [(r[1], r[2]) for r in attempts(database_url, caught.id)] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]

    uncaught = zart.start(retry_app.fails_after_retries, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failure:
        uncaught.result(timeout=30)
    assert failure.value.error_type == "StepFailed"
    assert "always-fails#1" in failure.value.message and "the service is down" in failure.value.message
    assert uncaught.status() == "failed"
    assert len(attempts(database_url, uncaught.id)) == 3
    # `zart status` shows the stored error.
    shown = run_cli("status", uncaught.id, "--database-url", database_url)
    assert shown.stdout.splitlines() == [
        "failed",
        "error: StepFailed: step 'always-fails#1' failed: ValueError: the service is down",
    ]


@pytest.mark.parametrize("how", ["non-retryable-type", "raise-non-retryable"])
def test_non_retryable_errors_stop_at_once(database_url, worker, how):
    handle = zart.start(retry_app.non_retryable, how, database_url=database_url)
    expected = "PermissionError" if how == "non-retryable-type" else "NonRetryable"
    assert handle.result(timeout=30) == expected
    assert [(r[1], r[2]) for r in attempts(database_url, handle.id)] == [(1, "failed")]


def test_sigkill_during_retry_back_off_loses_and_duplicates_nothing(database_url, subprocess_env):
    first = WorkerProcess(subprocess_env, app="tests.apps.retry_app")
    try:
        first.wait_started()
        handle = zart.start(retry_app.retry_after_two_seconds, database_url=database_url)
        wait_until(lambda: attempts(database_url, handle.id), what="the first attempt to fail")
        wait_until(lambda: attempts(database_url, handle.id)[0][2] == "failed", what="attempt 1 to end")
        # The back-off is a task in PostgreSQL: nothing holds it while it waits.
        assert query(
            database_url,
            "SELECT claimed_by IS NULL, run_at > now() FROM zart_tasks WHERE execution_id = %s",
            (handle.id,),
        ) == [(True, True)]
        first.kill()
    finally:
        first.stop()
    second = WorkerProcess(subprocess_env, app="tests.apps.retry_app")
    try:
        second.wait_started()
        assert handle.result(timeout=30) == 2
    finally:
        second.stop()
    rows = attempts(database_url, handle.id)
    assert [(r[1], r[2]) for r in rows] == [(1, "failed"), (2, "succeeded")]
    waited = rows[1][5] - rows[0][6]
    assert datetime.timedelta(seconds=2) <= waited < datetime.timedelta(seconds=4), waited
    assert query(
        database_url,
        "SELECT value::text FROM test_effects WHERE execution_id = %s ORDER BY id",
        (handle.id,),
    ) == [("1",), ("2",)]


def test_step_timeouts_async_and_sync(database_url, worker):
    began = time.monotonic()
    handle = zart.start(retry_app.step_timeouts, database_url=database_url)
    assert handle.result(timeout=30) == {"async": "StepTimeout", "sync": "StepTimeout"}
    assert time.monotonic() - began < 1.4  # neither waited for its body (30 s and 1.5 s)
    rows = attempts(database_url, handle.id)
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("slow-async#1", "timed_out", "StepTimeout"),
        ("slow-sync#1", "timed_out", "StepTimeout"),
    ]
    assert "exceeded the step's timeout of 0.2 s" in rows[0][4]


def test_workflow_timeout_while_waiting_in_back_off(database_url, worker):
    began = time.monotonic()
    handle = zart.start(retry_app.times_out_in_back_off, database_url=database_url)
    with pytest.raises(zart.WorkflowTimedOut):
        handle.result(timeout=30)
    elapsed = time.monotonic() - began
    assert 1.0 <= elapsed < 5, elapsed  # at the deadline, not after the 10 s back-off
    assert handle.status() == "timed_out"
    assert [(r[1], r[2]) for r in attempts(database_url, handle.id)] == [(1, "failed")]
    assert query(database_url, "SELECT count(*) FROM zart_tasks WHERE execution_id = %s", (handle.id,)) == [
        (0,)
    ]


def test_workflow_timeout_cuts_a_running_step(database_url, worker):
    handle = zart.start(retry_app.times_out_mid_step, database_url=database_url)
    with pytest.raises(zart.WorkflowTimedOut):
        handle.result(timeout=30)
    info = handle.info()
    assert info.status == "timed_out" and info.error["type"] == "WorkflowTimedOut"
    assert [(r[1], r[2], r[3]) for r in attempts(database_url, handle.id)] == [
        (1, "timed_out", "WorkflowTimedOut")
    ]


BAD_POLICIES = [
    "fixed",
    "fixed()",
    "fixed(3)",
    "fixed(-1, 2s)",
    "fixed(3, 2 seconds)",
    "fixed(3, 2s, 4s)",
    "fixed(3, 0s)",
    "fixed(three, 2s)",
    "exponential(3)",
    "exponential(3, 2s, 1s)",
    "exponential(3, 2s, 1m, 5m)",
    "exponential(3, 1w)",
    "linear(3, 2s)",
    "fixed(3, 2s",
    "",
    "always",
]


@pytest.mark.parametrize("policy", BAD_POLICIES)
def test_malformed_retry_policies_fail_at_decoration(policy):
    with pytest.raises(ValueError) as error:

        @zart.step(f"bad-policy-{policy}".replace("(", "<").replace(")", ">"), retry=policy)
        def never_registered() -> None: ...

    message = str(error.value)
    assert f"invalid retry policy {policy!r}" in message
    assert '"fixed(N, DELAY)" or "exponential(N, BASE[, MAX])"' in message  # shows the grammar
    assert "250ms, 2s" in message


@pytest.mark.parametrize("duration", ["2 seconds", "-5s", "1w", "", "1.5.2s", "ms", "0s", "5", "1h30m"])
def test_malformed_durations_fail_at_decoration(duration):
    with pytest.raises(ValueError, match=r"invalid timeout of step 'timed'.*250ms, 2s, 1\.5s, 5m, 1h, 1d"):
        zart.step("timed", timeout=duration)
    with pytest.raises(ValueError, match=r"invalid timeout of workflow 'timed-wf'"):
        zart.workflow("timed-wf", timeout=duration)


def test_policy_delays():
    assert [Retry.parse("exponential(4, 2s)").delay_before_retry(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    capped = Retry.parse("exponential(5, 1s, 3s)")
    assert [capped.delay_before_retry(n) for n in (1, 2, 3, 4)] == [1, 2, 3, 3]
    assert Retry.parse("fixed(3, 250ms)").delay_before_retry(3) == 0.25
    jittered = Retry.exponential(3, datetime.timedelta(seconds=4), jitter=True)
    assert all(2 <= jittered.delay_before_retry(1) <= 4 for _ in range(200))
    assert Retry.parse("none").should_retry(1, RuntimeError()) is False
    assert Retry.parse("fixed(2, 1s)").should_retry(2, RuntimeError()) is True
    assert Retry.parse("fixed(2, 1s)").should_retry(3, RuntimeError()) is False
