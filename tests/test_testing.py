"""The test kit (zart.testing): the clock a test moves, idleness, isolation, and the pytest plugin in
a project of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest

import zart
from zart.testing import NotIdle, assert_steps, keys, workflow_env

from .apps import testing_app
from .conftest import REPO_ROOT


@pytest.fixture
def env(server_url):
    with workflow_env(database_url=server_url) as environment:
        yield environment


def history(handle: zart.ExecutionHandle) -> list[tuple]:
    """What must be the same in real and skipped time: each entry's key, kind, status and attempts,
    and each attempt's outcome."""
    entries = [(s.key, s.kind, s.status, s.attempts) for s in handle.steps()]
    attempts = [(a.step_key, a.attempt, a.outcome, a.error_type) for a in handle.attempts()]
    return entries + attempts


def test_an_approval_of_seven_days_two_days_and_hour_long_retries_runs_in_under_a_second(env):
    began = time.monotonic()
    handle = env.start(testing_app.approval, {"applicant": "ada-long"})
    env.advance("3h")  # four failures, their back-offs growing to an hour
    env.advance("7d")
    env.send_event(handle.id, "decision", {"ok": True})
    assert handle.result(timeout=5) == {"score": 705, "decision": {"ok": True}}
    took = time.monotonic() - began
    assert took < 1.0, f"took {took:.2f} s"
    assert_steps(handle, ["kit-score#1", "sleep:cool-off#1", "event:decision#1"])
    assert [a.outcome for a in handle.attempts()] == ["failed"] * 4 + ["succeeded"]
    assert env.skipped >= timedelta(days=7, hours=3)


def test_the_short_version_has_the_same_history_in_real_time_and_skipped(env):
    real = env.start(testing_app.approval_short, {"applicant": "real"})
    began = time.monotonic()
    real_result = real.result(timeout=30)  # the worker waits out every moment on the real clock
    real_took = time.monotonic() - began
    skipped = env.start(testing_app.approval_short, {"applicant": "skipped"})
    began = time.monotonic()
    while env.advance_to_next():
        pass
    skipped_result = skipped.result(timeout=5)
    skipped_took = time.monotonic() - began
    assert skipped_result == real_result == {"score": 704, "decision": None}
    assert history(skipped) == history(real)
    assert real_took > 1.2 > skipped_took  # 0.1 + 0.2 + 0.3 + 0.7 + 0.5 s of real waiting


def test_an_event_wait_times_out_when_its_two_days_pass(env):
    handle = env.start(testing_app.approval, {"applicant": "bob-long"})
    env.advance(timedelta(days=9, hours=3))
    assert handle.result(timeout=5) == {"score": 705, "decision": None}
    assert [s.status for s in handle.steps()] == ["completed", "completed", "failed"]


def test_children_maps_schedules_and_queues_follow_the_clock(env):
    parent = env.start(testing_app.family, 2)
    env.run_until_idle()
    assert parent.status() == "waiting"
    env.advance("1d")  # the child's day
    assert [c.status for c in parent.children()] == ["completed", "sleeping", "sleeping"]
    env.advance("3d")  # the map's children: 2 and 3 days
    assert parent.result(timeout=5) == [1, 2, 3]
    assert keys(parent) == ["child:kit-napper#1", "child:kit-napper[0]", "child:kit-napper[1]"]

    zart.schedule("nightly", "0 3 * * *", testing_app.report, database_url=env.database_url)
    fired = env.advance_to_next()
    (run,) = zart.list(workflow="kit-report", database_url=env.database_url)
    assert run.status == "completed" and run.id.startswith("nightly@")
    assert fired is not None and fired.hour in (3, 4)  # 03:00 UTC, a hair past

    from zart.queue_admin import set_queue

    set_queue("one-at-a-time", concurrency=1, database_url=env.database_url)
    first = env.start(testing_app.napper, 1, queue="one-at-a-time")
    second = env.start(testing_app.napper, 1, queue="one-at-a-time")
    env.run_until_idle()
    assert (first.status(), second.status()) == ("sleeping", "pending")
    env.advance("1d")
    assert (first.status(), second.status()) == ("completed", "sleeping")
    env.advance("1d")
    assert second.result(timeout=5) == 1


def test_run_until_idle_names_what_is_still_busy(env):
    handle = env.start(testing_app.busy, 1.5)
    with pytest.raises(NotIdle, match=r"1 task\(s\) running"):
        env.run_until_idle(timeout=0.3)
    env.run_until_idle()
    assert handle.result(timeout=5) == 1.5


@pytest.mark.parametrize("duration", ["soon", "-1d", float("inf")])
def test_a_bad_duration_is_refused_with_its_name(env, duration):
    with pytest.raises(ValueError, match="duration to advance"):
        env.advance(duration)


def test_assert_steps_shows_both_histories(env):
    handle = env.start(testing_app.napper, 1)
    env.advance("1d")
    assert handle.result(timeout=5) == 1
    with pytest.raises(AssertionError, match=r"\['sleep:nap#1'\] is not \['nap'\]"):
        assert_steps(handle, ["nap"])


PROJECT_MODULE = """
import zart


@zart.workflow("renewal")
async def renewal(customer: str) -> str:
    await zart.sleep("grace", "30d")
    return f"renewed {customer}"
"""

PROJECT_TESTS = """
import zart

from renewals import renewal


def _only_mine(zart_env, execution_id):
    found = zart.list(database_url=zart_env.database_url)
    assert [info.id for info in found] == [execution_id]


def test_one(zart_env):
    handle = zart_env.start(renewal, "ada", id="same-id")
    zart_env.advance("30d")
    assert handle.result(timeout=5) == "renewed ada"
    _only_mine(zart_env, "same-id")


def test_two(zart_env):
    handle = zart_env.start(renewal, "bob", id="same-id")
    zart_env.advance("30d")
    assert handle.result(timeout=5) == "renewed bob"
    _only_mine(zart_env, "same-id")
"""


def test_the_plugin_works_in_a_fresh_project_and_parallel_tests_are_isolated(tmp_path, server_url):
    (tmp_path / "renewals.py").write_text(textwrap.dedent(PROJECT_MODULE))
    (tmp_path / "test_renewals.py").write_text(textwrap.dedent(PROJECT_TESTS))
    foreign = ("ZART_", "PYTEST_", "PYTHONPATH")  # the project's own environment, not this suite's
    env = {key: value for key, value in os.environ.items() if not key.startswith(foreign)}
    env["ZART_TEST_DATABASE_URL"] = server_url
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "test_renewals.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert str(REPO_ROOT) not in env.get("PYTHONPATH", "")  # the project imports zart as installed


def test_a_workflow_timeout_falls_due_with_the_clock(env):
    handle = env.start(testing_app.deadline)
    env.advance("23h")
    assert handle.status() == "sleeping"
    env.advance("1h")
    with pytest.raises(zart.WorkflowTimedOut):
        handle.result(timeout=5)
