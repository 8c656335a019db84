"""What each dashboard page shows, read from the database in one short transaction per page.

These are blocking functions: the pages run them on a thread of the API's read lane. Every
statement is a range of an index (the overview's through the same statements as `GET /metrics`), so a
page costs the same on a database of a million executions; tests/test_dashboard.py checks the plans.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from ... import client, queue_admin, scheduler, serde, sql, streams
from ...client import AttemptRecord, ChildRecord, ExecutionInfo, StepRecord
from ...metrics import FINISHED_WINDOW_SECONDS
from ...pools import transaction

PAGE_SIZE = 50
SHOWN_EVENTS = 200
SHOWN_CHILDREN = 200
SHOWN_STREAM_VALUES = 10
TERMINAL = sql.TERMINAL_STATUSES
FAILED_STATUSES = ("failed", "timed_out", "cancelled")


@attrs.frozen
class Worker:
    id: str
    host: str
    pid: int
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime


@attrs.frozen
class Overview:
    now: datetime
    live: list[tuple[str, str, int]]  # (workflow, status, count) of executions not ended
    ended: list[tuple[str, str, int]]  # ... of those ended in the last hour
    per_minute: list[tuple[int, int]]  # (completed, other ends) for 59, 58, ... 0 minutes ago
    ready: int
    oldest_ready_seconds: float
    workers: list[Worker]

    @property
    def statuses(self) -> list[str]:
        """The statuses present, in the order of zart's status list."""
        present = {status for _, status, _ in self.live + self.ended}
        return [status for status in client.STATUSES if status in present]

    def table(self) -> list[tuple[str, dict[str, int]]]:
        """One row per workflow: its count per status (live and ended in the last hour)."""
        rows: dict[str, dict[str, int]] = {}
        for workflow, status, count in self.live + self.ended:
            counts = rows.setdefault(workflow, {})
            counts[status] = counts.get(status, 0) + count
        return sorted(rows.items())

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, status, count in self.live + self.ended:
            totals[status] = totals.get(status, 0) + count
        return totals


def overview(url: str) -> Overview:
    with transaction(url) as conn:
        (now,) = conn.execute(sql.DATABASE_NOW).fetchone()
        live = conn.execute(sql.METRICS_LIVE_EXECUTIONS).fetchall()
        ended = conn.execute(sql.METRICS_FINISHED_EXECUTIONS, {"seconds": FINISHED_WINDOW_SECONDS}).fetchall()
        minutes = conn.execute(sql.DASHBOARD_THROUGHPUT).fetchall()
        ready, oldest = conn.execute(sql.METRICS_READY_TASKS).fetchone()
        workers = [Worker(*row) for row in conn.execute(sql.DASHBOARD_WORKERS).fetchall()]
    buckets = [[0, 0] for _ in range(60)]
    for ago, status, count in minutes:
        if 0 <= ago < 60:
            buckets[59 - ago][0 if status == "completed" else 1] += count
    return Overview(
        now,
        sorted(live),
        sorted(ended),
        [(done, other) for done, other in buckets],
        ready,
        oldest,
        workers,
    )


@attrs.frozen
class ListFilters:
    """The executions page's filters, checked (see pages.list_filters)."""

    status: str | None = None
    workflow: str | None = None
    prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_time: datetime | None = None  # the keyset: the last row of the page before
    after_id: str | None = None

    @property
    def by_id(self) -> bool:
        """A prefix search lists in id order (its index's); the others newest first."""
        return self.prefix is not None

    def statement(self) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"limit": PAGE_SIZE + 1}
        names: set[str] = set()
        if self.status == "paused":
            names.add("paused")
        elif self.status is not None:
            names.add("status")
            params["status"] = self.status
        for name in ("workflow", "prefix", "since", "until"):
            if getattr(self, name) is not None:
                names.add(name)
                params[name] = getattr(self, name)
        if self.prefix is not None:
            params["prefix_end"] = self.prefix + "\U0010ffff"  # past every id that starts with it
        if self.after_id is not None and self.by_id:
            names.add("after_id")
            params["after_id"] = self.after_id
        elif self.after_id is not None and self.after_time is not None:
            names.add("after_time")
            params["after_time"] = self.after_time
            params["after_id"] = self.after_id
        return sql.dashboard_list(frozenset(names), self.by_id), params


@attrs.frozen
class ExecutionsPage:
    rows: list[ExecutionInfo]
    more: bool  # a next page exists (its keyset: the last row's created_at and id)


def executions(url: str, filters: ListFilters) -> ExecutionsPage:
    statement, params = filters.statement()
    with transaction(url) as conn:
        rows = conn.execute(statement, params).fetchall()
    found = [
        ExecutionInfo(ident, workflow, status, None, None, None, created, None, finished)
        for ident, workflow, status, created, finished in rows[:PAGE_SIZE]
    ]
    return ExecutionsPage(found, len(rows) > PAGE_SIZE)


@attrs.frozen
class Event:
    id: int
    name: str
    payload: Any
    key: str | None
    created_at: datetime
    consumed_by: str | None
    consumed_at: datetime | None


@attrs.frozen
class Detail:
    now: datetime
    info: ExecutionInfo
    steps: list[StepRecord]
    attempts: list[AttemptRecord]
    events: list[Event]
    children: list[ChildRecord]
    streams: list[tuple[str, int, list[streams.StreamValue]]]

    @property
    def ended(self) -> bool:
        return self.info.status in TERMINAL

    def tracebacks(self) -> list[AttemptRecord]:
        """The failed attempts that left a traceback, newest first."""
        return [attempt for attempt in reversed(self.attempts) if attempt.traceback][:5]


def execution(url: str, execution_id: str) -> Detail:
    """ExecutionNotFound for an unknown id."""
    handle, info = client.get_with_info(execution_id, database_url=url)
    with transaction(url) as conn:
        (now,) = conn.execute(sql.DATABASE_NOW).fetchone()
        events = [
            Event(ident, name, serde.loads(payload), key, created, consumed_by, consumed_at)
            for ident, name, payload, key, created, consumed_by, consumed_at in conn.execute(
                sql.DASHBOARD_EVENTS, {"id": execution_id, "limit": SHOWN_EVENTS}
            ).fetchall()
        ]
    children = handle.children(limit=SHOWN_CHILDREN) if info.children else []
    return Detail(
        now,
        info,
        handle.steps(),
        handle.attempts(),
        events,
        children,
        streams.tails(url, execution_id, limit=SHOWN_STREAM_VALUES),
    )


def queues(url: str) -> list[queue_admin.QueueInfo]:
    return queue_admin.queue_stats(database_url=url)


def schedules(url: str) -> list[scheduler.ScheduleInfo]:
    return scheduler.list_schedules(database_url=url)
