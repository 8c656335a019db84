"""Schedules: cron rules that start a workflow at every firing, exactly once (docs/composition.md).

A schedule is a row of `zart_schedules`: its rule (`zart.cron`), its workflow and input, and
`next_fire_at`, the next firing not yet started. Every worker runs a `Scheduler`, a trio task that
sleeps until the earliest `next_fire_at` (or the worker's poll interval, to notice schedules added or
resumed meanwhile) and then, in ONE transaction:

1. locks the due rows no other worker is firing (`FOR UPDATE SKIP LOCKED`);
2. starts each due firing's execution with the engine's normal start (`zart.starting`, one
   `sql.START_EXECUTIONS`), its id `NAME@TIME` with TIME the firing in UTC (an existing id is not
   started again);
3. moves `next_fire_at` past the firings it handled.

So a firing starts once whatever the number of workers and supervisors: a second worker either skips
the locked row or, after the commit, no longer finds it due; a worker killed half-way commits neither
the start nor the advance, and the next one fires it. The execution id is a second guard: a firing's
execution can never exist twice. The claim of tasks (sql.CLAIM_TASKS) and the completer's batches
know nothing of schedules.

Catch-up, for the firings that came due while no worker ran (or before the firing worker started):
'latest' starts the last of them only, 'all' every one, 'none' none (the next firing is the first one
after now). A firing that comes due while the worker runs is started under every policy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
import orjson
import psycopg
import trio

from . import cron, registry, serde, sql, starting
from .db import is_transient, resolve_url
from .errors import ScheduleNotFound, UnknownWorkflow, ZartError
from .logs import log_event
from .names import check_name
from .pools import transaction
from .registry import Workflow
from .workerstate import DB_RETRY_SECONDS, WorkerDb

log = logging.getLogger("zart.scheduler")

# Schedule names become execution ids (NAME@2026-11-27T03:00:00Z: 21 more characters).
MAX_NAME_LENGTH = starting.MAX_ID_LENGTH - 21
# Rows locked per transaction, and firings one 'all' catch-up starts per row and transaction (the
# rest follow in the next transactions, at once).
_ROWS_PER_PASS = 50
_FIRINGS_PER_ROW = 100


@attrs.frozen
class ScheduleInfo:
    """One schedule as `zart schedules` and `GET /v1/schedules` show it."""

    name: str
    cron: str
    timezone: str
    catch_up: str
    workflow: str
    next_fire_at: datetime
    last_execution: str | None
    last_fired_at: datetime | None
    paused: bool


@attrs.frozen
class Entry:
    """A schedule to register: its name, rule, workflow and input (JSON text; None: the firing time)."""

    name: str
    rule: cron.Cron
    workflow: str
    input: str | None


def check_schedule_name(name: Any) -> str:
    return check_name(name, "schedule name", MAX_NAME_LENGTH)


def declared_entries() -> list[Entry]:
    """The schedules of this process's workflows (`@zart.workflow(..., schedule=...)`)."""
    return [Entry(w.name, w.schedule, w.name, None) for w in registry.workflows() if w.schedule is not None]


def register(conn: psycopg.Connection, entries: Sequence[Entry]) -> None:
    """Create or update these schedules (a paused one stays paused)."""
    if not entries:
        return
    now = conn.execute(sql.DATABASE_NOW).fetchone()[0]
    conn.execute(
        sql.REGISTER_SCHEDULES,
        {
            "names": [e.name for e in entries],
            "crons": [e.rule.expression for e in entries],
            "timezones": [e.rule.timezone for e in entries],
            "catch_ups": [e.rule.catch_up for e in entries],
            "workflows": [e.workflow for e in entries],
            "inputs": [e.input for e in entries],
            "next_fire_ats": [e.rule.after(now) for e in entries],
        },
    )


# -- the public functions ---------------------------------------------------------------------------


def schedule(
    name: str,
    cron_expression: str,
    workflow: Workflow | str,
    input: Any = None,
    *,
    timezone: str = "UTC",
    catch_up: str = "latest",
    database_url: str | None = None,
) -> None:
    """Create (or update) the schedule `name`: start `workflow` at every firing of `cron_expression`.

    Each firing's input is `input` when it is not None, else the firing time (ISO-8601 UTC text).
    """
    check_schedule_name(name)
    rule = cron.check(cron_expression, timezone, catch_up, f"schedule {name!r}")
    if isinstance(workflow, Workflow):
        workflow_name, local = workflow.name, True
    elif isinstance(workflow, str):
        workflow_name, local = workflow, registry.get_workflow(workflow) is not None
    else:
        raise TypeError(f"workflow must be a @zart.workflow function or its name, not {workflow!r}")
    data = None if input is None else serde.dumps(input, f"the input of schedule {name!r}").decode()
    url = resolve_url(database_url)
    with transaction(url) as conn:
        if not local:
            known = [row[0] for row in conn.execute(sql.SELECT_REGISTERED_WORKFLOWS).fetchall()]
            if workflow_name not in known:
                raise UnknownWorkflow(
                    f"unknown workflow {workflow_name!r} for schedule {name!r}; known workflows: "
                    f"{', '.join(map(repr, known)) or 'none'} (import the module that defines it)"
                )
        register(conn, [Entry(name, rule, workflow_name, data)])


def unschedule(name: str, *, database_url: str | None = None) -> bool:
    """Delete the schedule `name` (its executions stay); False if there was none."""
    check_schedule_name(name)
    with transaction(resolve_url(database_url)) as conn:
        return conn.execute(sql.DELETE_SCHEDULE, {"name": name}).fetchone() is not None


def list_schedules(*, database_url: str | None = None) -> list[ScheduleInfo]:
    with transaction(resolve_url(database_url)) as conn:
        return [ScheduleInfo(*row) for row in conn.execute(sql.LIST_SCHEDULES).fetchall()]


def set_paused(name: str, paused: bool, *, database_url: str | None = None) -> None:
    """Pause or resume a schedule. A resumed schedule's next firing is the first one after now: the
    firings of the pause are not made up. ScheduleNotFound if there is none."""
    with transaction(resolve_url(database_url)) as conn:
        row = conn.execute(sql.SELECT_SCHEDULE_RULE, {"name": name}).fetchone()
        if row is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        now = conn.execute(sql.DATABASE_NOW).fetchone()[0]
        conn.execute(
            sql.SET_SCHEDULE_PAUSED,
            {"name": name, "paused": paused, "next_fire_at": cron.Cron(*row).after(now)},
        )


def pause_schedule(name: str, *, database_url: str | None = None) -> None:
    """Pause the schedule `name`: no firing starts until it is resumed (ScheduleNotFound if none)."""
    set_paused(name, True, database_url=database_url)


def resume_schedule(name: str, *, database_url: str | None = None) -> None:
    """Resume the schedule `name`; its next firing is the first one after now."""
    set_paused(name, False, database_url=database_url)


# -- firing (in the workers) ------------------------------------------------------------------------


def due_firings(
    rule: cron.Cron, next_fire_at: datetime, now: datetime, since: datetime
) -> tuple[list[datetime], datetime]:
    """The firings to start of a schedule due at `next_fire_at`, and its next `next_fire_at`.

    `since`: when the firing worker started; a firing before it was missed (catch-up applies)."""
    if rule.catch_up == "all":
        fire = [next_fire_at]
        for t in rule.firings(next_fire_at):
            if t > now or len(fire) == _FIRINGS_PER_ROW:
                return fire, t
            fire.append(t)
    upcoming = rule.after(now)
    latest = cron.previous(rule, upcoming)
    latest = max(latest, next_fire_at)
    if rule.catch_up == "none" and latest < since:
        return [], upcoming
    return [latest], upcoming


def fire_due(conn: psycopg.Connection, url: str, since: datetime | None) -> tuple[int, bool, datetime]:
    """One transaction: lock the due schedules, start their firings, advance them.

    Returns (executions started, whether more may be due, the database's now)."""
    started = 0
    with conn.transaction():
        rows = conn.execute(sql.CLAIM_DUE_SCHEDULES, {"limit": _ROWS_PER_PASS}).fetchall()
        now = rows[0][7] if rows else conn.execute(sql.DATABASE_NOW).fetchone()[0]
        since = now if since is None else since
        more = len(rows) == _ROWS_PER_PASS
        for name, expression, timezone, catch_up, workflow, input_text, next_fire_at, _ in rows:
            rule = cron.Cron(expression, timezone, catch_up)
            firings, following = due_firings(rule, next_fire_at, now, since)
            more = more or following <= now
            last = None
            for t in firings:
                execution_id = cron.firing_id(name, t)
                value = cron.iso(t) if input_text is None else orjson.loads(input_text)
                try:
                    with conn.transaction():  # a savepoint: a failed start leaves nothing behind
                        p, needs_workflow = starting.plan(
                            workflow,
                            [value],
                            [execution_id],
                            queue=None,
                            key=None,
                            priority=0,
                            delay=None,
                            run_at=None,
                        )
                        result = starting.run_sync(conn, url, p, needs_workflow)
                except (psycopg.Error, ZartError, ValueError, TypeError) as exc:
                    if isinstance(exc, psycopg.Error) and is_transient(exc):
                        raise
                    log_event(
                        log,
                        "schedule.start_failed",
                        logging.ERROR,
                        schedule=name,
                        execution=execution_id,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    continue
                started += sum(1 for s in result if s.created)
                last = t
                log_event(log, "schedule.fired", schedule=name, execution=execution_id)
            conn.execute(
                sql.ADVANCE_SCHEDULE,
                {
                    "name": name,
                    "next_fire_at": following,
                    "last_execution": None if last is None else cron.firing_id(name, last),
                    "last_fired_at": last,
                },
            )
    return started, more, now


def seconds_to_next_firing(conn: psycopg.Connection) -> tuple[float | None, datetime]:
    seconds, now = conn.execute(sql.SECONDS_TO_NEXT_FIRING).fetchone()
    return seconds, now


class Scheduler:
    """A worker's schedule task: sleeps until the next firing, then fires what is due (see above).

    Idle, it costs one statement per wake-up: at the earliest next firing, or every `poll_interval`
    (to notice a schedule created or resumed by another process)."""

    def __init__(self, db: WorkerDb, url: str, *, poll_interval: float) -> None:
        self._db = db
        self._url = url
        self._poll_interval = poll_interval
        # The database's clock when this worker's scheduler started: firings due before it were
        # missed (catch-up applies to them).
        self._since: datetime | None = None

    async def run(self) -> None:
        while True:
            try:
                seconds, now = await self._db.run(seconds_to_next_firing)
                if self._since is None:
                    self._since = now
                if seconds is not None and seconds <= 0:
                    _, more, _ = await self._db.run(fire_due, self._url, self._since)
                    if more:
                        continue
                    seconds, _ = await self._db.run(seconds_to_next_firing)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log_event(log, "schedule.db_error", logging.WARNING, worker=self._db.worker_id, error=exc)
                await trio.sleep(DB_RETRY_SECONDS)
                continue
            if seconds is None:
                delay = self._poll_interval
            else:
                # a hair past the firing, so that the firing transaction's now() has reached it
                delay = min(max(seconds, 0.0) + 0.002, self._poll_interval)
            await trio.sleep(delay)
