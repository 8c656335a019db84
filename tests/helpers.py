"""Helpers shared by the tests: waiting on conditions, worker subprocesses, side-effect counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent

# The log line a worker prints once it is claiming.
WORKER_STARTED = "event=worker.started"

# Steps of the test apps insert one row here per run of their body: counting rows counts side effects.
EFFECTS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS test_effects (
    id bigserial PRIMARY KEY,
    execution_id text NOT NULL,
    step_key text NOT NULL,
    pid integer NOT NULL,
    value json
)
"""


def local_server_url() -> str | None:
    """$ZART_TEST_DATABASE_URL, else the PostgreSQL on 127.0.0.1:5432 if it answers, else None
    (then the caller uses the embedded server)."""
    url = os.environ.get("ZART_TEST_DATABASE_URL")
    if url:
        return url
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(local, connect_timeout=2).close()
    except psycopg.OperationalError:
        return None
    return local


def worker_env(url: str) -> dict[str, str]:
    """The environment of a worker subprocess on `url`: its effects go to the database it works on,
    and it imports the test apps from the repository."""
    env = dict(os.environ)
    env["ZART_DATABASE_URL"] = url
    env.pop("ZART_TEST_EFFECTS_URL", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, grace: float = 30, kill_wait: float = 10) -> int:
    """SIGTERM, `grace` seconds to drain and exit, then SIGKILL: the exit status.

    A draining process gets its chance to finish cleanly (what the tests check), and a hung one
    cannot hang the test run.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(kill_wait)
    return process.returncode


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def scalar(url: str, statement: str, params: Any = None) -> Any:
    rows = query(url, statement, params)
    return rows[0][0] if rows else None


def zart_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "zart", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        zart_command(*args),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
    )


class WorkerProcess:
    """A real `zart worker` subprocess (short lease and poll, so crash tests recover quickly)."""

    command = "worker"

    def __init__(
        self, env: dict[str, str], *extra: str, app: str = "tests.apps.core_app", prefix: tuple[str, ...] = ()
    ) -> None:
        name = f"zart-{self.command}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / name
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *prefix,  # e.g. taskset: the CPUs the process may use
                *zart_command(self.command, "--app", app, "--lease", "1s", "--poll-interval", "0.5s", *extra),
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_started(self, timeout: float = 30) -> None:
        wait_until(
            lambda: WORKER_STARTED in self.log() or self.process.poll() is not None,
            timeout,
            what="the worker to start",
        )
        assert self.process.poll() is None, f"worker exited early:\n{self.log()}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        code = stop_process(self.process, grace=15, kill_wait=5)
        self._log.close()
        return code


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(part) for part in text.split()]


class SupervisorProcess(WorkerProcess):
    """A real `zart supervise` subprocess."""

    command = "supervise"

    def __init__(
        self,
        env: dict[str, str],
        *extra: str,
        app: str = "tests.apps.chaos_app",
        prefix: tuple[str, ...] = (),
    ) -> None:
        super().__init__(env, *extra, app=app, prefix=prefix)

    def wait_workers(self, count: int, timeout: float = 30) -> list[int]:
        wait_until(
            lambda: self.log().count(WORKER_STARTED) >= count and len(child_pids(self.process.pid)) == count,
            timeout,
            what=f"{count} workers to start",
        )
        return child_pids(self.process.pid)


def assert_no_checkpointed_step_ran_twice(url: str) -> None:
    """Every step's side effect happened; a step ran twice only when its first attempt was cut short
    (in flight at a kill or an outage), never after its checkpoint was committed."""
    missing = scalar(
        url,
        "SELECT count(*) FROM zart_steps s WHERE s.kind = 'step' AND NOT EXISTS (SELECT 1 FROM test_effects e"
        " WHERE e.execution_id = s.execution_id AND e.step_key = s.step_key)",
    )
    assert missing == 0
    repeated_without_cause = query(
        url,
        """SELECT e.execution_id, e.step_key, count(*) FROM test_effects e
           GROUP BY 1, 2 HAVING count(*) > 1
              AND count(*) > 1 + (SELECT count(*) FROM zart_step_attempts a
                                  WHERE a.execution_id = e.execution_id AND a.step_key = e.step_key
                                    AND a.outcome = 'abandoned')""",
    )
    assert repeated_without_cause == []
    # A checkpoint has exactly one successful attempt.
    assert query(
        url,
        "SELECT count(*) FROM (SELECT execution_id, step_key FROM zart_step_attempts"
        " WHERE outcome = 'succeeded' GROUP BY 1, 2 HAVING count(*) > 1) d",
    ) == [(0,)]
