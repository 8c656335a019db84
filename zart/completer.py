"""The per-process batch completer: many executions' checkpoints in one transaction.

A step costs at least one commit, and one connection commits only a few thousand transactions a
second. So each running execution hands its pending writes (a `Fragment`) to the completer and waits;
the completer commits everything that has gathered as ONE transaction, and while that commit is in
flight the next batch gathers. Under load a batch holds hundreds of executions' checkpoints for the
price of one commit; when idle a batch holds one and costs no added latency (River's BatchCompleter
is the pattern).

Every fragment carries the fencing token of its task (`claims`). The batch first re-checks the tokens
(and extends those leases); fragments of tasks that another worker has taken over are dropped and
their executions told so (`commit()` returns False), so a worker whose lease lapsed can never
overwrite the progress of the one that took over.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Any

import attrs
import psycopg
import trio
from psycopg_pool import ConnectionPool

from . import sql
from .logs import log_event

log = logging.getLogger("zart.completer")

# How long a batch keeps retrying through a lost connection before its executions give up (their
# tasks are then resumed from their checkpoints by whichever worker claims them next).
_GIVE_UP_SECONDS = 120.0


@attrs.define
class Fragment:
    """The writes of one execution that must become durable together, in order."""

    execution_id: str
    task_id: int
    claims: int
    # (step_key, attempt, started_at)
    attempt_starts: list[tuple[str, int, datetime]] = attrs.field(factory=list)
    # (step_key, attempt, finished_at, outcome, error_type, error_message, traceback)
    attempt_ends: list[tuple[Any, ...]] = attrs.field(factory=list)
    # (step_key, seq, kind, status, output, error, attempts, started_at, finished_at, wake_in)
    steps: list[tuple[Any, ...]] = attrs.field(factory=list)
    # (event_id, step_key): events taken by waits
    consumed_events: list[tuple[int, str]] = attrs.field(factory=list)
    # (status, result, error, started_at, finished_at)
    execution: tuple[Any, ...] | None = None
    # This task is done: delete it (a branch that finished).
    finish_task: bool = False
    # The execution is over: delete all its tasks.
    finish_execution: bool = False
    # Branch tasks to create: (step_key, payload, seq, grp, ready)
    branch_tasks: list[tuple[str, str, int, int, bool]] = attrs.field(factory=list)
    # This fragment finishes a branch of fan-out `grp`: ready the next parked branch, and wake the
    # workflow if it was the last one.
    fan_in_group: int | None = None
    # Give the task back, claimable again after this many seconds (math.inf: only an event wakes it)...
    release_after: float | None = None
    # ...or at once if an event of this name is already waiting for it...
    wake_on_event: str | None = None
    # ...or at once if none of its branches is left.
    wake_when_branches_done: bool = False

    def is_empty(self) -> bool:
        return not (
            self.attempt_starts
            or self.attempt_ends
            or self.steps
            or self.consumed_events
            or self.execution
            or self.branch_tasks
            or self.finish_execution
            or self.fan_in_group is not None
            or self.finish_task
            or self.release_after is not None
        )


@attrs.define
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    committed: bool = False
    error: BaseException | None = None


class Completer:
    """Runs in the worker's nursery; `commit()` is called by the execution runners."""

    def __init__(
        self,
        pool: ConnectionPool,
        limiter: trio.CapacityLimiter,
        worker_id: str,
        lease_seconds: float,
        max_batch: int = 2000,
    ) -> None:
        self._pool = pool
        self._limiter = limiter
        self._worker_id = worker_id
        self._lease = lease_seconds
        self._max_batch = max_batch
        self._queue: list[tuple[Fragment, _Waiter]] = []
        self._wakeup = trio.Event()
        self.batches = 0
        self.fragments = 0

    async def commit(self, fragment: Fragment) -> bool:
        """Make `fragment` durable; False when the task's lease was lost (nothing written)."""
        waiter = _Waiter()
        self._queue.append((fragment, waiter))
        self._wakeup.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.committed

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                fragments = [fragment for fragment, _ in batch]
                try:
                    valid = await self._write_with_retries(fragments)
                except (psycopg.Error, OSError) as exc:
                    log_event(log, "checkpoint.failed", logging.WARNING, fragments=len(batch), error=exc)
                    for _, waiter in batch:
                        waiter.error = exc
                        waiter.done.set()
                    continue
                self.batches += 1
                self.fragments += len(batch)
                for fragment, waiter in batch:
                    waiter.committed = fragment.task_id in valid
                    waiter.done.set()

    async def _write_with_retries(self, fragments: list[Fragment]) -> set[int]:
        """Commit a batch, retrying while the connection is lost (PostgreSQL restarting).

        Safe to repeat even when a commit's outcome is unknown: every write of a batch is
        idempotent (ON CONFLICT, upserts, re-checked fencing tokens), and if the leases lapse
        meanwhile, the re-checked tokens drop the fragments instead of writing them.
        """
        delay = 0.1
        waited = 0.0
        while True:
            try:
                valid = await trio.to_thread.run_sync(partial(self._write, fragments), limiter=self._limiter)
            except psycopg.OperationalError as exc:
                if waited >= _GIVE_UP_SECONDS:
                    raise
                if waited == 0:
                    log_event(log, "database.lost", logging.WARNING, error=exc)
                await trio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)
                continue
            if waited:
                log_event(log, "database.reconnected", after_seconds=round(waited, 1))
            return valid

    def _write(self, fragments: list[Fragment]) -> set[int]:
        """One transaction for the whole batch (runs in a worker thread)."""
        with self._pool.connection() as conn, conn.transaction():
            return self.write_batch(conn, fragments)

    def write_batch(self, conn: psycopg.Connection, fragments: list[Fragment]) -> set[int]:
        """The batch's statements, inside the caller's transaction; the task ids still held."""
        fragments = sorted(fragments, key=lambda f: f.task_id)  # lock order: no deadlocks
        ids = [f.task_id for f in fragments]
        fan_in = sorted({f.execution_id for f in fragments if f.fan_in_group is not None})
        if fan_in:
            conn.execute(sql.LOCK_TASKS_FOR_FAN_IN, {"ids": ids, "execution_ids": fan_in})
        rows = conn.execute(
            sql.EXTEND_LEASES,
            {
                "lease": self._lease,
                "ids": ids,
                "claims": [f.claims for f in fragments],
                "worker": self._worker_id,
            },
        ).fetchall()
        valid = {row[0] for row in rows}
        kept = [f for f in fragments if f.task_id in valid]
        if kept:
            self._apply(conn, kept)
        return valid

    def _apply(self, conn: psycopg.Connection, fragments: list[Fragment]) -> None:
        """The batch's writes, sent in one pipeline: one round trip for all of them."""
        with conn.pipeline():
            release, branched, fan_in = self._queue_writes(conn, fragments)
            # A task became ready now (branches, an event already there, a fan-in, the next item of
            # a map's window): tell the workers. Reading the results syncs the pipeline once.
            notify = branched or (release is not None and any(row[0] for row in release.fetchall()))
            notify = any([bool(cursor.fetchall()) for cursor in fan_in]) or notify
            if notify:
                conn.execute(sql.NOTIFY_TASKS)

    def _queue_writes(
        self, conn: psycopg.Connection, fragments: list[Fragment]
    ) -> tuple[psycopg.Cursor | None, bool, list[psycopg.Cursor]]:
        """Queue every write of the batch; returns the release cursor, whether branch tasks were
        created, and the fan-in cursors: what tells whether some task became ready now."""
        ends = [(f.execution_id, *row) for f in fragments for row in f.attempt_ends]
        if ends:
            conn.execute(sql.FINISH_ATTEMPTS, _columns(ends, _END_COLUMNS))
        starts = [
            (f.execution_id, key, attempt, self._worker_id, started)
            for f in fragments
            for key, attempt, started in f.attempt_starts
        ]
        if starts:
            conn.execute(sql.START_ATTEMPTS, _columns(starts, _START_COLUMNS))
        steps = [(f.execution_id, *row) for f in fragments for row in f.steps]
        if steps:
            conn.execute(sql.INSERT_STEPS, _columns(steps, _STEP_COLUMNS))
        consumed = [event for f in fragments for event in f.consumed_events]
        if consumed:
            conn.execute(sql.CONSUME_EVENTS, _columns(consumed, ("ids", "step_keys")))
        updates = [(f.execution_id, *f.execution) for f in fragments if f.execution]
        if updates:
            conn.execute(sql.UPDATE_EXECUTIONS, _columns(updates, _EXECUTION_COLUMNS))
        branches = [(f.execution_id, *row) for f in fragments for row in f.branch_tasks]
        if branches:
            conn.execute(sql.INSERT_BRANCH_TASKS, _columns(branches, _BRANCH_COLUMNS))
        finished = [f.task_id for f in fragments if f.finish_task]
        if finished:
            conn.execute(sql.DELETE_TASKS, {"ids": finished})
        over = [f.execution_id for f in fragments if f.finish_execution]
        if over:
            conn.execute(sql.DELETE_EXECUTION_TASKS, {"ids": over})
        released = [
            f for f in fragments if f.release_after is not None and not (f.finish_task or f.finish_execution)
        ]
        release = None
        if released:
            release = conn.execute(
                sql.RELEASE_TASKS,
                {
                    "ids": [f.task_id for f in released],
                    "claims": [f.claims for f in released],
                    "delays": [f.release_after for f in released],
                    "events": [f.wake_on_event for f in released],
                    "branches": [f.wake_when_branches_done for f in released],
                },
            )
        fan_in: list[psycopg.Cursor] = []
        fanned_in = [f for f in fragments if f.fan_in_group is not None]
        if fanned_in:
            groups: dict[tuple[str, int], int] = {}
            for f in fanned_in:
                group = (f.execution_id, f.fan_in_group)
                groups[group] = groups.get(group, 0) + 1
            fan_in.append(
                conn.execute(
                    sql.READY_PARKED_BRANCHES,
                    {
                        "execution_ids": [g[0] for g in groups],
                        "grps": [g[1] for g in groups],
                        "counts": list(groups.values()),
                    },
                )
            )
            fan_in.append(
                conn.execute(
                    sql.WAKE_FANNED_IN, {"execution_ids": sorted({f.execution_id for f in fanned_in})}
                )
            )
        return release, bool(branches), fan_in


_END_COLUMNS = (
    "execution_ids",
    "step_keys",
    "attempts",
    "finished_ats",
    "outcomes",
    "error_types",
    "error_messages",
    "tracebacks",
)
_START_COLUMNS = ("execution_ids", "step_keys", "attempts", "worker_ids", "started_ats")
_STEP_COLUMNS = (
    "execution_ids",
    "step_keys",
    "seqs",
    "kinds",
    "statuses",
    "outputs",
    "errors",
    "attempts",
    "started_ats",
    "finished_ats",
    "wake_ins",
)
_BRANCH_COLUMNS = ("execution_ids", "step_keys", "payloads", "seqs", "grps", "readies")
_EXECUTION_COLUMNS = ("ids", "statuses", "results", "errors", "started_ats", "finished_ats")


def _columns(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Rows to one array per column, the shape `unnest` takes."""
    return {name: list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}
