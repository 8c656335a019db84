"""Testing workflows: an isolated database per test, a worker in the test's process, and a clock
the test moves.

    from zart.testing import workflow_env, assert_steps

    with workflow_env(apps=["shop"]) as env:
        handle = env.start(order, {"id": 7})
        env.advance("7d")                       # the week-long sleep is over
        env.send_event(handle.id, "approved", {"by": "ada"})
        assert handle.result(timeout=5) == "paid"
        assert_steps(handle, ["reserve#1", "sleep:cool-off#1", "event:approved#1", "charge#1"])

The pytest plugin (entry point `pytest11`, `zart.testing.plugin`) gives the same as the `zart_env`
fixture. See docs/testing.md.

How time skips. Every decision about time in Zart's statements reads the engine's clock,
`zart_now()` and its two siblings (migration 0016), which in production are the database's own
clock, inlined by the planner. A test's database has them redefined `offset` seconds ahead:
`advance(d)` waits until nothing can happen without the clock moving (`run_until_idle`), moves it by
`d`, wakes the worker, and waits again, so sleeps, event-wait timeouts, retry back-offs, workflow
timeouts, delayed starts and schedules that fall within `d` run, in order of their moments only as
far as the worker's claims keep it (use `advance_to_next()` to step from one moment to the next).
The clock moves only while no task is held, so no lease lapses under a running step; a step's own
timeout runs on real time, as the step's code does.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import conninfo

from .. import client, schema, sql
from ..client import ExecutionHandle, StepRecord
from ..db import resolve_url
from ..durations import parse_duration
from ..errors import ZartError
from ..pools import close_pools, transaction
from ..registry import Workflow
from ..worker import Worker

ENV_SERVER = "ZART_TEST_DATABASE_URL"
IDLE_CHECK_SECONDS = 0.005
TEMPLATE_LOCK = 0x7A617275  # "zaru": one process makes the template database


class NotIdle(ZartError, TimeoutError):
    """`run_until_idle` waited its whole timeout and the executions were still busy."""


def _server_url(database_url: str | None) -> str:
    """Where test databases are made: the argument, $ZART_TEST_DATABASE_URL, $ZART_DATABASE_URL, or
    the embedded server."""
    return database_url or os.environ.get(ENV_SERVER) or resolve_url(None)


def _with_database(url: str, name: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


class WorkflowEnv:
    """One test's database and worker, and the clock of its engine (see the module's doc)."""

    def __init__(self, url: str) -> None:
        self.database_url = url
        self._offset = 0.0

    # -- acting ---------------------------------------------------------------------------------------

    def start(self, workflow: Workflow | str, input: Any = None, **options: Any) -> ExecutionHandle:
        """`zart.start` on this environment's database (same options: id=, queue=, key=, ...)."""
        return client.start(workflow, input, database_url=self.database_url, **options)

    def send_event(
        self, execution_id: str, name: str, payload: Any = None, *, key: str | None = None
    ) -> bool:
        """`zart.send_event` on this environment's database."""
        return client.send_event(execution_id, name, payload, key=key, database_url=self.database_url)

    def get(self, execution_id: str) -> ExecutionHandle:
        return client.get(execution_id, database_url=self.database_url)

    # -- the clock -----------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The engine's clock: the database's, plus what the test skipped."""
        with transaction(self.database_url) as conn:
            return conn.execute(sql.DATABASE_NOW).fetchone()[0]

    @property
    def skipped(self) -> timedelta:
        """How far the test moved the engine's clock so far."""
        return timedelta(seconds=self._offset)

    def advance(self, duration: str | timedelta | float, *, timeout: float = 10.0) -> None:
        """Move the engine's clock `duration` ahead, one due moment at a time: each timer that falls
        within it (a sleep's end, a retry, a deadline, a firing, and the timers those runs set) runs
        at its own moment, in order, as it would in real time; then the clock rests at the end."""
        seconds = parse_duration(duration, "duration to advance")
        self.run_until_idle(timeout=timeout)
        target = self._offset + seconds
        while True:
            step = self._until_next_due()
            if step is None or self._offset + step > target:
                break
            self._set_offset(self._offset + step)
            self.run_until_idle(timeout=timeout)
        self._set_offset(max(target, self._offset))
        self.run_until_idle(timeout=timeout)

    def advance_to_next(self, *, timeout: float = 10.0) -> datetime | None:
        """Move the clock to the next moment something waits for (a sleep's end, a deadline, a retry, a
        schedule's firing) and run until idle; that moment, or None when nothing waits for the clock."""
        self.run_until_idle(timeout=timeout)
        step = self._until_next_due()
        if step is None:
            return None
        self._set_offset(self._offset + step)
        self.run_until_idle(timeout=timeout)
        return self.now()

    def _until_next_due(self) -> float | None:
        """Seconds from the engine's now to the next moment due (a hair past it), None if none."""
        with transaction(self.database_url) as conn:
            (seconds,) = conn.execute(sql.TEST_NEXT_DUE).fetchone()
        return None if seconds is None else max(seconds, 0.0) + 0.001

    def run_until_idle(self, *, timeout: float = 10.0) -> None:
        """Wait (real time, at most `timeout` s) until no task is held by the worker, none is due and no
        schedule is due: nothing more happens until the clock moves or an event arrives."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:  # two readings in a row: a commit may hand work on between two statements
            with transaction(self.database_url) as conn:
                held, due, firing = conn.execute(sql.TEST_ACTIVITY).fetchone()
            quiet = quiet + 1 if held == due == firing == 0 else 0
            if quiet < 2:
                if time.monotonic() > deadline:
                    raise NotIdle(
                        f"still busy after {timeout} s: {held} task(s) running, {due} due, "
                        f"{firing} schedule(s) due"
                    )
                time.sleep(IDLE_CHECK_SECONDS)

    def _set_offset(self, seconds: float) -> None:
        with transaction(self.database_url) as conn:
            for statement in sql.engine_clock(seconds):
                conn.execute(statement)
            conn.execute(sql.NOTIFY_TASKS)  # the worker claims what fell due now, not at its next poll
        self._offset = seconds


def _import(apps: Iterable[str]) -> None:
    for module in apps:
        importlib.import_module(module)


def _template_name() -> str:
    """The template database of this set of migrations: a new migration makes a new template."""
    digest = hashlib.sha1()
    for migration in schema.available_migrations():
        digest.update(f"{migration.version}:{migration.name}:{migration.sql}".encode())
    return f"zart_template_{digest.hexdigest()[:12]}"


def _template(server: str) -> str:
    """A migrated database to copy for each test (CREATE DATABASE ... TEMPLATE: a fraction of the time
    of migrating a new one), made once per server and set of migrations; test processes in parallel
    make it once, under an advisory lock."""
    name = _template_name()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                building = f"{name}_building"
                conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{building}"')
                schema.migrate(_with_database(server, building))
                conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
    return name


def _create_from_template(server: str, name: str) -> None:
    template = _template(server)
    with psycopg.connect(server, autocommit=True) as conn:
        for attempt in range(50):  # a copy fails while another session is connected to the template
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.02)


@contextmanager
def workflow_env(
    apps: Sequence[str] = (),
    database_url: str | None = None,
    *,
    concurrency: int = 100,
    poll_interval: str | float = "100ms",
) -> Iterator[WorkflowEnv]:
    """A fresh database (made on the server of `database_url`, $ZART_TEST_DATABASE_URL,
    $ZART_DATABASE_URL or the embedded one, from a migrated template; dropped at the end), with a
    worker running in this process for the workflows registered here (`apps`: modules to import)."""
    _import(apps)
    server = _server_url(database_url)
    name = f"zart_test_{uuid.uuid4().hex[:12]}"  # names made here, never from outside
    _create_from_template(server, name)
    url = _with_database(server, name)
    try:
        worker = Worker(url, concurrency=concurrency, poll_interval=poll_interval, lease="60s")
        worker.start()
        try:
            yield WorkflowEnv(url)
        finally:
            worker.stop()
    finally:
        close_pools(url)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def keys(history: ExecutionHandle | Sequence[StepRecord]) -> list[str]:
    """The keys of an execution's history entries, in order."""
    steps = history.steps() if isinstance(history, ExecutionHandle) else history
    return [step.key for step in steps]


def assert_steps(history: ExecutionHandle | Sequence[StepRecord], expected: Sequence[str]) -> None:
    """The execution's history holds exactly these entries, in this order (keys such as `charge#1`,
    `sleep:cool-off#1`, `event:approved#1`, `child:invoice#1`)."""
    found = keys(history)
    if found != list(expected):
        raise AssertionError(f"history {found} is not {list(expected)}")


__all__ = ["NotIdle", "WorkflowEnv", "assert_steps", "keys", "workflow_env"]
