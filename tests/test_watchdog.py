"""The supervisor's watchdog (zart.watchdog): a worker whose heartbeat or claim loop stopped going
round is killed and replaced, and its executions finish on the replacement; an idle, healthy worker
is left alone, and a limit that would kill healthy workers is refused before anything runs."""

from __future__ import annotations

import re
import signal
import time

import psycopg

import zart
from tests.apps import core_app as app
from zart.supervisor import Supervisor
from zart.watchdog import Liveness, default_limit

from .helpers import (
    SupervisorProcess,
    WorkerProcess,
    assert_no_checkpointed_step_ran_twice,
    run_cli,
    scalar,
    wait_until,
    worker_env,
)
from .tcpproxy import relayed

UNRESPONSIVE = "event=worker.unresponsive"


def test_a_loop_is_stuck_only_past_the_limit_and_only_while_watched():
    liveness = Liveness.create(2, limit=10.0)
    now = time.monotonic()
    assert liveness.stuck(0, now + 1000) is None  # never went round: not watched yet
    liveness.went_round(0, "claim_loop")
    assert liveness.stuck(0, now + 5) is None
    # The heartbeat has not gone round yet: it counts from the claim loop's first round.
    loop, seconds = liveness.stuck(0, time.monotonic() + 11)
    assert loop == "heartbeat" and seconds > 10
    liveness.went_round(0, "heartbeat")
    liveness.went_round(0, "claim_loop")
    assert liveness.stuck(0, time.monotonic() + 9) is None
    liveness.unwatch(0)  # a draining worker
    assert liveness.stuck(0, time.monotonic() + 1000) is None
    assert liveness.stuck(1, time.monotonic() + 1000) is None  # the other slot was never watched
    assert default_limit(lease=30, poll_interval=5) == 120
    assert default_limit(lease=2, poll_interval=0.5) == 60


def test_a_watchdog_that_would_kill_healthy_workers_is_refused(subprocess_env):
    env = dict(subprocess_env, ZART_DATABASE_URL="postgresql://127.0.0.1:1/never-reached")
    short = run_cli(
        "supervise", "--app", "tests.apps.core_app", "--lease", "30s", "--watchdog", "10s", env=env
    )
    assert short.returncode != 0
    assert "--watchdog 10s is shorter than the lease" in short.stderr
    assert "Traceback" not in short.stderr
    bad = run_cli("supervise", "--app", "tests.apps.core_app", "--watchdog", "soon", env=env)
    assert bad.returncode != 0 and "invalid --watchdog 'soon'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_zart_worker_refuses_a_watchdog_shorter_than_its_lease(subprocess_env):
    env = dict(subprocess_env, ZART_DATABASE_URL="postgresql://127.0.0.1:1/never-reached")
    short = run_cli("worker", "--app", "tests.apps.core_app", "--lease", "30s", "--watchdog", "10s", env=env)
    assert short.returncode != 0
    assert "--watchdog 10s is shorter than the lease" in short.stderr
    assert "Traceback" not in short.stderr


def test_a_watchdog_of_0_is_off_and_the_default_follows_the_lease():
    off = Supervisor("postgresql://127.0.0.1:1/x", 1, 1.0, {"lease": "2s"}, watchdog="0")
    default = Supervisor("postgresql://127.0.0.1:1/x", 1, 1.0, {"lease": "40s", "poll_interval": "1s"})
    try:
        assert off._liveness is None
        assert default._liveness is not None and default._liveness.limit == 160
    finally:
        off._claims.close()
        default._claims.close()


def _kills(log: str) -> list[str]:
    return [line for line in log.splitlines() if UNRESPONSIVE in line]


def test_a_worker_whose_event_loop_is_blocked_is_killed_and_its_execution_finishes(
    fresh_database_url, tmp_path
):
    """A step's first attempt blocks the worker's trio loop (time.sleep in an async step). The
    durable sleep before it leaves the worker idle for longer than the limit: it is not touched.
    Then the watchdog kills it; the replacement runs the step again and the execution completes,
    with the step before it not run again."""
    url = fresh_database_url
    env = worker_env(url)
    supervisor = SupervisorProcess(
        env, "--procs", "1", "--lease", "2s", "--watchdog", "4s", app="tests.apps.core_app"
    )
    try:
        (first,) = supervisor.wait_workers(1)
        marker = tmp_path / "stalled"  # made by the stalling step just before it blocks the loop
        handle = zart.start(app.stalls_once, {"n": 1, "nap": "5s", "marker": str(marker)}, database_url=url)
        wait_until(lambda: _kills(supervisor.log()), timeout=40, what="the watchdog to kill the worker")
        assert marker.exists()  # killed once the step stalled, not during the idle nap before it
        assert handle.result(timeout=30) == [2, "went on"]
        # One kill: had the first come during the nap, the replacement's first attempt of the step
        # would have stalled in its turn, and been killed too.
        (line,) = _kills(supervisor.log())
        assert f"pid={first}" in line and re.search(r"loop=(heartbeat|claim_loop)", line)
        assert float(re.search(r"seconds=([\d.]+)", line).group(1)) > 4
        assert "event=worker.released" in supervisor.log()  # its task handed back at once
        (replacement,) = supervisor.wait_workers(1)
        assert replacement != first
    finally:
        supervisor.stop()
    with psycopg.connect(url) as conn:
        runs = dict(conn.execute("SELECT step_key, count(*) FROM test_effects GROUP BY step_key").fetchall())
    assert runs == {"add-one#1": 1, "stall-once#1": 2}  # only the step in flight ran again
    assert_no_checkpointed_step_ran_twice(url)


def test_a_worker_whose_connections_never_answer_is_killed(fresh_database_url):
    """Between the worker and PostgreSQL, a relay that keeps every connection open but passes no
    answer on (a proxy whose backend went): keepalives cannot see it. The watchdog kills the worker;
    once the relay passes answers again, the replacement runs work."""
    url = fresh_database_url
    with relayed(url) as (proxy, through):
        supervisor = SupervisorProcess(
            worker_env(through),
            "--procs",
            "1",
            "--lease",
            "2s",
            "--watchdog",
            "4s",
            app="tests.apps.core_app",
        )
        try:
            (first,) = supervisor.wait_workers(1)
            proxy.hold()
            wait_until(lambda: _kills(supervisor.log()), timeout=30, what="the watchdog to kill the worker")
            assert f"pid={first}" in _kills(supervisor.log())[0]
            proxy.cut()  # answers pass again
            handle = zart.start(app.three_steps, {"n": 4}, database_url=url)
            assert handle.result(timeout=30)["value"] == 10
            assert first not in supervisor.wait_workers(1)
        finally:
            proxy.cut()
            supervisor.stop()
    assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL") == 0


def test_zart_worker_alone_kills_itself_when_its_event_loop_is_blocked(fresh_database_url, tmp_path):
    """Without a supervisor, a thread of the worker's own process watches its loops: blocked, the
    process kills itself (SIGKILL, for systemd or Kubernetes to restart it). Another worker takes
    the execution over once its lease runs out, and the step before it does not run again."""
    url = fresh_database_url
    env = worker_env(url)
    worker = WorkerProcess(env, "--lease", "2s", "--watchdog", "4s")
    replacement = None
    try:
        worker.wait_started()
        handle = zart.start(
            app.stalls_once, {"n": 1, "nap": "1s", "marker": str(tmp_path / "stalled")}, database_url=url
        )
        assert worker.process.wait(timeout=30) == -signal.SIGKILL
        (line,) = _kills(worker.log())
        assert f"pid={worker.process.pid}" in line and "action=SIGKILL" in line
        replacement = WorkerProcess(env, "--lease", "2s", "--watchdog", "4s")
        replacement.wait_started()
        assert handle.result(timeout=30) == [2, "went on"]
    finally:
        worker.stop()
        if replacement is not None:
            replacement.stop()
    with psycopg.connect(url) as conn:
        runs = dict(conn.execute("SELECT step_key, count(*) FROM test_effects GROUP BY step_key").fetchall())
    assert runs == {"add-one#1": 1, "stall-once#1": 2}
    assert_no_checkpointed_step_ran_twice(url)
