"""Schedules (zart.scheduler): exactly one execution per firing across workers and supervisors, the
catch-up policies after downtime, a SIGKILL while firing, pause/resume, and bad input.

tests/apps/schedules_app.py declares three schedules that fire every second (croniter's 6-field form),
one per catch-up policy. The tests never import it in this process (an in-process worker of another
test would then fire them): only the worker subprocesses do.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import zart
from zart import cron, registry

from .apps import core_app
from .helpers import SupervisorProcess, WorkerProcess, query, scalar, wait_until

APP = "tests.apps.schedules_app"
SECOND = timedelta(seconds=1)


def _env(subprocess_env: dict[str, str], url: str) -> dict[str, str]:
    return dict(subprocess_env, ZART_DATABASE_URL=url)


def _now(url: str) -> datetime:
    return scalar(url, "SELECT now()")


def _wait_for_db_time(url: str, moment: datetime, what: str) -> None:
    wait_until(lambda: _now(url) >= moment, timeout=60, interval=0.05, what=what)


def _firings(url: str, schedule: str) -> list[datetime]:
    """The firing times of a schedule's executions, from their ids NAME@TIME, in order."""
    rows = query(url, "SELECT id FROM zart_execution_runs WHERE id LIKE %s ORDER BY id", (schedule + "@%",))
    times = []
    for (execution_id,) in rows:
        name, _, stamp = execution_id.partition("@")
        assert name == schedule
        times.append(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC))
    return times


def _assert_gap_free(times: list[datetime]) -> None:
    assert times, "no firing"
    gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a != SECOND]
    assert not gaps, f"firings not one second apart: {gaps}"


def _all_completed(url: str) -> bool:
    return scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status <> 'completed'") == 0


# -- exactly once across two supervisors --------------------------------------------------------------


def test_two_supervisors_fire_each_second_exactly_once(fresh_database_url, subprocess_env):
    url = fresh_database_url
    env = _env(subprocess_env, url)
    supervisors = [SupervisorProcess(env, "--procs", "2", app=APP) for _ in range(2)]
    try:
        for s in supervisors:
            s.wait_workers(2)
        window_start = _now(url)
        _wait_for_db_time(url, window_start + timedelta(seconds=10), "10 s of firings")
        window_end = _now(url)
    finally:
        for s in supervisors:
            s.stop()
    for schedule in ("tick-latest", "tick-all", "tick-none"):
        times = _firings(url, schedule)
        _assert_gap_free(times)
        # every second of the window fired (none missed), each once (the ids are the primary key)
        first = window_start.replace(microsecond=0) + SECOND
        last = window_end.replace(microsecond=0)
        inside = [t for t in times if first <= t <= last]
        assert len(inside) == int((last - first).total_seconds()) + 1 >= 9, (schedule, inside)
        assert len(set(times)) == len(times)
    # and no process started any firing twice (the log line is written by the start that created it)
    logs = "".join(s.log() for s in supervisors)
    fired = scalar(url, "SELECT count(*) FROM zart_execution_runs")
    assert logs.count("event=schedule.fired") == fired
    assert logs.count("event=worker.crashed") == 0


# -- catch-up after downtime --------------------------------------------------------------------------


def test_catch_up_after_the_workers_were_stopped(fresh_database_url, subprocess_env):
    url = fresh_database_url
    env = _env(subprocess_env, url)
    worker = WorkerProcess(env, app=APP)
    try:
        worker.wait_started()
        wait_until(lambda: len(_firings(url, "tick-none")) >= 2, what="two firings")
    finally:
        worker.stop()
    stopped_at = _now(url)
    before = {name: _firings(url, name) for name in ("tick-latest", "tick-all", "tick-none")}
    _wait_for_db_time(url, stopped_at + timedelta(seconds=5.2), "5 s of downtime")
    restarted_at = _now(url)
    worker = WorkerProcess(env, app=APP)
    try:
        worker.wait_started()
        wait_until(
            lambda: all(
                any(t >= restarted_at + 2 * SECOND for t in _firings(url, name))
                for name in ("tick-latest", "tick-all", "tick-none")
            ),
            what="on-time firings after the restart",
        )
    finally:
        worker.stop()
    missed = [t for t in _firings(url, "tick-all") if stopped_at < t < restarted_at]

    # all: every missed firing started (at least five), the whole run gap-free
    assert len(missed) >= 5
    _assert_gap_free(_firings(url, "tick-all"))

    # latest: one firing for the missed ones (the last of them), then on time again
    after = [t for t in _firings(url, "tick-latest") if t > before["tick-latest"][-1]]
    catch_up, on_time = after[0], after[1:]
    assert catch_up > restarted_at - SECOND, f"an older missed firing was started: {catch_up}"
    assert [t for t in after if t < restarted_at - SECOND] == []
    _assert_gap_free(on_time)
    assert on_time[0] == catch_up + SECOND

    # none: no missed firing started; the first one after the restart is a future one
    after = [t for t in _firings(url, "tick-none") if t > before["tick-none"][-1]]
    assert after and after[0] >= restarted_at, (restarted_at, after[:3])
    _assert_gap_free(after)


# -- a SIGKILL while firing -----------------------------------------------------------------------------


def test_sigkill_while_firing_neither_doubles_nor_loses_the_firing(fresh_database_url, subprocess_env):
    """The test holds a row lock on the id of the next 'tick-all' firing, so that the worker's start of
    it blocks inside its firing transaction; the worker is killed there. The firing must then be
    started exactly once, by the next worker, and no other one lost."""
    url = fresh_database_url
    env = _env(subprocess_env, url)
    worker = WorkerProcess(env, app=APP)
    blocker = psycopg.connect(url)
    try:
        worker.wait_started()
        wait_until(lambda: len(_firings(url, "tick-all")) >= 2, what="two firings")
        target = _now(url).replace(microsecond=0) + 2 * SECOND
        target_id = cron.firing_id("tick-all", target)
        blocker.execute(
            "INSERT INTO zart_execution_runs (id, workflow, input) VALUES (%s, 'tick-all', 'null')",
            (target_id,),
        )
        wait_until(
            lambda: (
                scalar(
                    url,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'",
                )
                >= 1
            ),
            what="the worker's start to block on the held id",
        )
        worker.kill()
        blocker.rollback()
        assert scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE id = %s", (target_id,)) == 0
        worker = WorkerProcess(env, app=APP)
        worker.wait_started()
        wait_until(
            lambda: any(t >= target + 3 * SECOND for t in _firings(url, "tick-all")),
            what="firings after the restart",
        )
        wait_until(lambda: _all_completed(url), what="every firing's execution to complete")
    finally:
        blocker.close()
        worker.stop()
    times = _firings(url, "tick-all")
    assert target in times
    _assert_gap_free(times)
    row = query(url, "SELECT status, input FROM zart_execution_runs WHERE id = %s", (target_id,))
    assert row == [("completed", cron.iso(target))]


# -- pause, resume, zart.schedule, the listing ------------------------------------------------------------


def test_schedule_pause_resume_and_list(fresh_database_url, monkeypatch):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    zart.schedule("every-second", "* * * * * *", core_app.three_steps, {"n": 1}, database_url=url)
    [info] = zart.list_schedules(database_url=url)
    assert (info.name, info.cron, info.timezone, info.catch_up, info.paused) == (
        "every-second",
        "* * * * * *",
        "UTC",
        "latest",
        False,
    )
    with zart.Worker(url, lease="2s", poll_interval="0.5s"):
        wait_until(lambda: zart.list_schedules(database_url=url)[0].last_execution, what="a firing")
        zart.pause_schedule("every-second", database_url=url)
        paused_at = _now(url)
        count = scalar(url, "SELECT count(*) FROM zart_execution_runs")
        _wait_for_db_time(url, paused_at + 2.5 * SECOND, "2.5 s of pause")
        assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == count
        assert zart.list_schedules(database_url=url)[0].paused
        zart.resume_schedule("every-second", database_url=url)
        resumed_at = _now(url)
        wait_until(
            lambda: scalar(
                url, "SELECT count(*) FROM zart_execution_runs WHERE created_at > %s", (resumed_at,)
            ),
            what="a firing after the resume",
        )
        wait_until(lambda: _all_completed(url), what="the executions to complete")
    # the firings of the pause were not made up; the input is the schedule's own
    times = _firings(url, "every-second")
    assert not [t for t in times if paused_at + SECOND < t < resumed_at - SECOND]
    assert {r[0] for r in query(url, "SELECT input::text FROM zart_execution_runs")} == {'{"n":1}'}
    # updating the schedule keeps its pause state
    zart.pause_schedule("every-second", database_url=url)
    zart.schedule("every-second", "*/5 * * * *", "three-steps", database_url=url)
    [info] = zart.list_schedules(database_url=url)
    assert info.paused and info.cron == "*/5 * * * *"
    assert zart.unschedule("every-second", database_url=url)
    assert zart.list_schedules(database_url=url) == []
    with pytest.raises(zart.ScheduleNotFound):
        zart.resume_schedule("every-second", database_url=url)


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "every day"}, "invalid cron expression 'every day'"),
        ({"schedule": "61 * * * *"}, "invalid cron expression"),
        ({"schedule": "0 0 30 2 *"}, "never fires"),
        ({"schedule": "0 3 * * *", "timezone": "Europe/Berlinn"}, "unknown timezone 'Europe/Berlinn'"),
        ({"schedule": "0 3 * * *", "catch_up": "some"}, "catch_up must be one of 'latest', 'all', 'none'"),
    ],
)
def test_bad_schedules_fail_at_decoration(kwargs, message):
    with pytest.raises(ValueError, match=message):

        @zart.workflow("bad-schedule", **kwargs)
        async def bad(fired_at: str) -> None:
            pass

    assert registry.get_workflow("bad-schedule") is None


def test_a_scheduled_workflow_must_take_the_firing_time():
    with pytest.raises(TypeError, match="takes no input"):

        @zart.workflow("no-input-schedule", schedule="0 3 * * *")
        async def no_input() -> None:
            pass

    assert registry.get_workflow("no-input-schedule") is None


def test_bad_schedule_calls_fail_before_the_database(database_url):
    with pytest.raises(ValueError, match="invalid cron expression"):
        zart.schedule("s", "nope", core_app.three_steps, database_url=database_url)
    with pytest.raises(ValueError, match="unknown timezone"):
        zart.schedule(
            "s", "0 3 * * *", core_app.three_steps, timezone="Mars/Olympus", database_url=database_url
        )
    with pytest.raises(ValueError, match="catch_up"):
        zart.schedule("s", "0 3 * * *", core_app.three_steps, catch_up="every", database_url=database_url)
    with pytest.raises(TypeError, match="workflow must be"):
        zart.schedule("s", "0 3 * * *", 42, database_url=database_url)
    with pytest.raises(zart.UnknownWorkflow, match="no-such-workflow"):
        zart.schedule("s", "0 3 * * *", "no-such-workflow", database_url=database_url)
    assert "s" not in [s.name for s in zart.list_schedules(database_url=database_url)]


def test_dst_follows_croniter():
    """Europe/Berlin: 02:30 does not exist on 2026-03-29 (fires at 03:00 local) and exists twice on
    2026-10-25 (fires twice). docs/composition.md says so."""
    rule = cron.check("30 2 * * *", "Europe/Berlin")
    spring = list(_take(rule.firings(datetime(2026, 3, 28, 12, tzinfo=UTC)), 2))
    assert [cron.iso(t) for t in spring] == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    autumn = list(_take(rule.firings(datetime(2026, 10, 24, 12, tzinfo=UTC)), 3))
    assert [cron.iso(t) for t in autumn] == [
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:30:00Z",
        "2026-10-26T01:30:00Z",
    ]


def _take(iterator, n):
    for _ in range(n):
        yield next(iterator)
