"""Starting, finding and waiting for executions, from any process.

Every function has an async twin that runs the same code in a worker thread, through whichever
async library is running (trio or asyncio), so it never blocks an event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import psycopg

from . import group_start, serde, sql, starting, status_reads, streams, waiting
from .db import ENV_URL, resolve_url
from .errors import (
    Cancelled,
    ExecutionFinished,
    ExecutionNotFound,
    ResultTimeout,
    WorkflowFailed,
    WorkflowTimedOut,
)
from .pools import transaction
from .threads import in_thread

if TYPE_CHECKING:  # the workers' modules (trio, ...): a process that only reads statuses needs none
    from .registry import Workflow

T = TypeVar("T")

TERMINAL = sql.TERMINAL_STATUSES
STATUSES = sql.STATUSES


@attrs.frozen
class ExecutionInfo:
    """A snapshot of one execution's row."""

    id: str
    workflow: str
    status: str
    input: Any
    result: Any
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue: str = "default"
    key: str | None = None  # the queue's per-key limit key (`key=` at start)
    priority: int = 0
    forked_from: str | None = None  # zart.fork: the execution this one was forked from
    forked_at: str | None = None  # ... and the step it ran on from
    forks: tuple[str, ...] = ()  # the executions forked from this one, oldest first
    resumes: int = 0  # how many times zart.resume ran it on after it ended
    parent_id: str | None = None  # a child execution (zart.child): its parent...
    parent_key: str | None = None  # ... and its entry in the parent's history
    children: int = 0  # how many child executions it started (see ExecutionHandle.children)


@attrs.frozen
class ChildRecord:
    """One child execution of a parent (zart.child, zart.map over a workflow)."""

    id: str
    workflow: str
    status: str
    key: str  # its entry in the parent's history: `child:NAME#k` or `child:NAME[i]`


@attrs.frozen
class StepRecord:
    """One history entry of an execution: a step, a sleep (`sleep:`), an event wait (`event:`) or a
    patch marker (`patch:`, see `zart.patched`)."""

    key: str
    position: int
    kind: str  # step | sleep | event | patch | emit | child
    status: str  # completed | failed | waiting
    result: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    wake_at: datetime | None  # a sleep's or an event wait's deadline


@attrs.frozen
class AttemptRecord:
    """One attempt of a step (`zart_step_attempts`)."""

    step_key: str
    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None  # None while running; succeeded | failed | timed_out | abandoned
    error_type: str | None
    error_message: str | None
    traceback: str | None


@attrs.frozen
class ExecutionHandle:
    """A reference to one execution: ask its status, wait for its result."""

    id: str
    workflow: str
    database_url: str = attrs.field(repr=False)
    created: bool = True  # False when start() found the id already there

    def status(self) -> str:
        with transaction(self.database_url) as conn:
            row = conn.execute(sql.SELECT_EXECUTION_STATUS, {"id": self.id}).fetchone()
        if row is None:
            raise ExecutionNotFound(f"no execution with id {self.id!r}")
        return row[0]

    def info(self) -> ExecutionInfo:
        return _fetch(self.database_url, self.id)

    def children(self, limit: int = 1000) -> list[ChildRecord]:
        """Its child executions (zart.child, zart.map over a workflow), in the order it made them."""
        with transaction(self.database_url) as conn:
            rows = conn.execute(sql.SELECT_CHILDREN, {"id": self.id, "limit": limit}).fetchall()
        return [ChildRecord(*row) for row in rows]

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the end; the value, or WorkflowFailed / WorkflowTimedOut / Cancelled.

        Woken by the execution's end (a NOTIFY with its final commit, see zart.waiting), not by
        polling; the status is read again at least once a second all the same.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with waiting.watch(self.database_url, self.id) as ended:
            while True:
                ended.clear()
                status, result, error = ended.outcome or self._status_row()
                if status in TERMINAL:
                    return _outcome(self.id, status, result, error)
                ended.wait(self._pause(status, deadline, timeout))

    def _pause(self, status: str, deadline: float | None, timeout: float | None) -> float:
        """How long to wait for the end notification before reading the status again."""
        if deadline is None:
            return waiting.FALLBACK_SECONDS
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResultTimeout(
                f"execution {self.id!r} is still {status} after {timeout} s; it goes on running"
            )
        return min(waiting.FALLBACK_SECONDS, left)

    def _status_row(self) -> tuple[str, str | None, str | None]:
        """(status, result, error), read with the other waiters of this process (zart.status_reads)."""
        return self._found(status_reads.reader_for(self.database_url).call(self.id))

    async def _astatus_row(self) -> tuple[str, str | None, str | None]:
        return self._found(await status_reads.reader_for(self.database_url).acall(self.id))

    def _found(self, row: tuple[str, str | None, str | None] | None) -> tuple[str, str | None, str | None]:
        if row is None:
            raise ExecutionNotFound(f"no execution with id {self.id!r}")
        return row

    def steps(self) -> list[StepRecord]:
        """The execution's history so far, in order."""
        with transaction(self.database_url) as conn:
            rows = conn.execute(sql.SELECT_STEPS, {"id": self.id}).fetchall()
        return [
            StepRecord(
                key,
                seq,
                kind,
                status,
                serde.loads(output),
                serde.loads(error),
                attempts,
                started,
                finished,
                wake_at,
            )
            for key, seq, kind, status, output, error, attempts, started, finished, wake_at in rows
        ]

    def attempts(self) -> list[AttemptRecord]:
        """Every attempt of every step, in the order they started."""
        with transaction(self.database_url) as conn:
            rows = conn.execute(sql.SELECT_ATTEMPTS, {"id": self.id}).fetchall()
        return [AttemptRecord(*row) for row in rows]

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel the execution; see `zart.cancel`."""
        return cancel(self.id, reason=reason, database_url=self.database_url)

    async def astatus(self) -> str:
        return await in_thread(self.status)

    async def acancel(self, reason: str = "cancelled") -> bool:
        return await in_thread(self.cancel, reason)

    async def ainfo(self) -> ExecutionInfo:
        return await in_thread(self.info)

    def stream(self, name: str) -> Iterator[Any]:
        """The values the execution emitted to its stream `name` (`zart.emit`), in order: all of them
        from the first, then each as it is committed; ends once the execution has ended and its last
        value is out. Woken by a NOTIFY with each commit (zart.streams), not by polling."""
        streams.check_stream_name(name)  # now, not at the first value
        return (value.value for value in streams.follow(self.database_url, self.id, name))

    def astream(self, name: str) -> AsyncIterator[Any]:
        """`stream` for async code (trio or asyncio): `async for value in handle.astream(name)`."""
        streams.check_stream_name(name)
        return _values(streams.afollow(self.database_url, self.id, name))

    async def aresult(self, timeout: float | None = None) -> Any:
        """`result` for async code: the wait holds no thread (only the status reads take one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async with waiting.awatch(self.database_url, self.id) as ended:
            while True:
                ended.clear()
                status, result, error = ended.outcome or await self._astatus_row()
                if status in TERMINAL:
                    return _outcome(self.id, status, result, error)
                await ended.wait(self._pause(status, deadline, timeout))


async def _values(found: AsyncIterator[streams.StreamValue]) -> AsyncIterator[Any]:
    async for value in found:
        yield value.value


def _outcome(execution_id: str, status: str, result: str | None, error: str | None) -> Any:
    if status == "completed":
        return serde.loads(result)
    details = serde.loads(error) or {}
    if status == "failed":
        raise WorkflowFailed(execution_id, details)
    if status == "timed_out":
        raise WorkflowTimedOut(f"execution {execution_id!r} timed out", execution_id)
    raise Cancelled(f"execution {execution_id!r} was cancelled", execution_id)


def start(
    workflow: Workflow | str,
    input: Any = None,
    *,
    id: str | None = None,
    queue: Any = None,
    key: str | None = None,
    priority: int = 0,
    delay: Any = None,
    run_at: datetime | None = None,
    connection: Any = None,
    database_url: str | None = None,
) -> ExecutionHandle:
    """Start an execution: one statement (the execution, its first task, the wake-up).

    Starting an id that exists returns that execution and runs nothing again; it raises
    DuplicateExecution only when the id belongs to another workflow. `queue` overrides the
    workflow's queue; `key` is the per-key limit's key (a tenant, a customer); `priority` orders the
    queue's waiting executions (lower first); `delay` or `run_at` holds it back until then.
    `connection`: a psycopg connection inside the caller's transaction (the execution exists only if
    that transaction commits).
    """
    return start_many(
        workflow,
        [input],
        None if id is None else [id],
        queue=queue,
        key=key,
        priority=priority,
        delay=delay,
        run_at=run_at,
        connection=connection,
        database_url=database_url,
        _many=False,
    )[0]


def start_many(
    workflow: Workflow | str,
    inputs: Sequence[Any],
    ids: Sequence[str] | None = None,
    *,
    queue: Any = None,
    key: str | None = None,
    priority: int = 0,
    delay: Any = None,
    run_at: datetime | None = None,
    connection: Any = None,
    database_url: str | None = None,
    _many: bool = True,
) -> list[ExecutionHandle]:
    """Start one execution per input, all in one transaction and one round trip.

    `ids` (optional, one per input; fresh UUIDs by default) behave as `start`'s `id`: one that exists
    is returned as it is. The options apply to every execution of the call.
    """
    inputs = _as_list(inputs)
    plan, needs_workflow = starting.plan(
        workflow, inputs, ids, queue=queue, key=key, priority=priority, delay=delay, run_at=run_at, many=_many
    )
    if connection is not None:
        starting.check_connection(connection, is_async=False)
        url = starting.connection_url(connection, database_url)
        rows = starting.run_in_callers_transaction(connection, url, plan, needs_workflow)
    else:
        url = resolve_url(database_url)
        if starting.groupable(url, plan, needs_workflow):
            rows = group_start.group_for(url).start(plan)
        else:
            rows = starting.run_in_own_transaction(url, plan, needs_workflow)
    return [ExecutionHandle(row.id, plan.workflow, url, created=row.created) for row in rows]


def _as_list(inputs: Any) -> list[Any]:
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Iterable):
        raise TypeError(f"inputs must be a list of workflow inputs, not {type(inputs).__name__}")
    return list(inputs)


def _fetch(url: str, execution_id: str) -> ExecutionInfo:
    with transaction(url) as conn:
        row = conn.execute(sql.SELECT_EXECUTION, {"id": execution_id}).fetchone()
    if row is None:
        raise ExecutionNotFound(f"no execution with id {execution_id!r}")
    ident, workflow, status, input_json, result, error, created, started, finished = row[:9]
    queue, key, priority = row[9:12]
    forked_from, forked_at, resumes, forks, parent_id, parent_key, children = row[12:]
    return ExecutionInfo(
        ident,
        workflow,
        status,
        serde.loads(input_json),
        serde.loads(result),
        serde.loads(error),
        created,
        started,
        finished,
        queue,
        key,
        priority,
        forked_from,
        forked_at,
        tuple(forks or ()),
        resumes,
        parent_id,
        parent_key,
        children,
    )


def get(execution_id: str, *, database_url: str | None = None) -> ExecutionHandle:
    """The handle of an existing execution; ExecutionNotFound otherwise."""
    return get_with_info(execution_id, database_url=database_url)[0]


def get_with_info(
    execution_id: str, *, database_url: str | None = None
) -> tuple[ExecutionHandle, ExecutionInfo]:
    """The handle of an existing execution and the row it was made from, read once (for a reader
    that shows both: the HTTP API's and the dashboard's execution)."""
    url = resolve_url(database_url)
    info = _fetch(url, execution_id)
    return ExecutionHandle(info.id, info.workflow, url, created=False), info


def list_executions(
    *,
    status: str | None = None,
    workflow: str | None = None,
    limit: int = 50,
    database_url: str | None = None,
) -> list[ExecutionInfo]:
    """The newest executions, optionally of one status and/or workflow."""
    url = resolve_url(database_url)
    statement = {
        (False, False): sql.LIST_EXECUTIONS,
        (True, False): sql.LIST_EXECUTIONS_BY_STATUS,
        (False, True): sql.LIST_EXECUTIONS_BY_WORKFLOW,
        (True, True): sql.LIST_EXECUTIONS_BY_STATUS_AND_WORKFLOW,
    }[status is not None, workflow is not None]
    if status == "paused":
        statement = sql.LIST_PAUSED_EXECUTIONS_BY_WORKFLOW if workflow else sql.LIST_PAUSED_EXECUTIONS
    with transaction(url) as conn:
        rows = conn.execute(statement, {"status": status, "workflow": workflow, "limit": limit}).fetchall()
    return [
        ExecutionInfo(ident, wf, st, None, None, None, created, None, finished)
        for ident, wf, st, created, finished in rows
    ]


def send_event(
    execution_id: str,
    name: str,
    payload: Any = None,
    *,
    key: str | None = None,
    database_url: str | None = None,
) -> bool:
    """Deliver event `name` to an execution; True when stored, False when `key` was seen before.

    Delivery and the wake-up of a waiting execution are one transaction. An event sent before the
    workflow reaches its wait is kept until a wait takes it (oldest first). Raises ExecutionNotFound
    for an unknown id and ExecutionFinished for an execution that already ended (nothing is stored).
    """
    url = resolve_url(database_url)
    if not isinstance(name, str) or not name:
        raise ValueError(f"an event needs a non-empty name, got {name!r}")
    if key is not None and not isinstance(key, str):
        raise TypeError(f"an event key must be a string, not {type(key).__name__}")
    data = serde.dumps(payload, f"the payload of event {name!r}")
    with transaction(url) as conn:
        # Lock order matters: the task row first (see sql.LOCK_EXECUTION_TASK).
        conn.execute(sql.LOCK_EXECUTION_TASK, {"id": execution_id})
        row = conn.execute(sql.SELECT_EXECUTION_FOR_EVENT, {"id": execution_id}).fetchone()
        if row is None:
            raise ExecutionNotFound(f"cannot send event {name!r}: no execution with id {execution_id!r}")
        status = row[0]
        if status in TERMINAL:
            raise ExecutionFinished(
                f"cannot send event {name!r} to execution {execution_id!r}: it is already {status}; "
                "the event was not stored"
            )
        stored = conn.execute(
            sql.INSERT_EVENT, {"id": execution_id, "name": name, "payload": data.decode(), "key": key}
        ).fetchone()
        if stored is None:
            return False  # this key was delivered before
        wake = {"id": execution_id, "key_prefix": f"event:{name}#"}
        if status == "waiting" and conn.execute(sql.WAKE_EXECUTION_TASK, wake).fetchone():
            conn.execute(sql.NOTIFY_TASKS)
    return True


def cancel(execution_id: str, *, reason: str = "cancelled", database_url: str | None = None) -> bool:
    """End an execution `cancelled`, and its unfinished children (zart.child) with it: True if it was
    cancelled now, False if it had already ended.

    Its tasks are removed in the same transaction, so nothing of it runs any more; a step running
    at that moment finishes, but its result is not recorded. `result()` then raises Cancelled.
    Raises ExecutionNotFound for an unknown id.
    """
    url = resolve_url(database_url)
    with transaction(url) as conn:
        # Its children (zart.child) go with it: their tasks and its parent's are locked first, in id
        # order, as a completer batch that ends a child locks its own and the parent's.
        below = [row[0] for row in conn.execute(sql.SELECT_DESCENDANTS, {"ids": [execution_id]})]
        conn.execute(sql.LOCK_FOR_CANCEL, {"ids": [execution_id, *below]})
        cancelled = conn.execute(sql.CANCEL_EXECUTION, {"id": execution_id, "reason": reason}).fetchone()
        if cancelled is None:
            if conn.execute(sql.SELECT_EXECUTION_WORKFLOW, {"id": execution_id}).fetchone() is None:
                raise ExecutionNotFound(f"cannot cancel: no execution with id {execution_id!r}")
            return False
        # A child's parent records the cancellation (ChildFailed) and is woken: before its tasks
        # go, which tell whether it was still parked in a zart.map window.
        conn.execute(sql.FINISH_CHILDREN, {"ids": [execution_id]})
        # Wakes the claimers if it freed a limited queue's slot: another execution may begin now.
        conn.execute(sql.DELETE_EXECUTION_TASKS, {"ids": [execution_id]})
        conn.execute(sql.ABANDON_OPEN_ATTEMPTS, {"id": execution_id})
        conn.execute(sql.NOTIFY_FINISHED, {"ids": [execution_id]})
        from .completer import cancel_descendants

        cancel_descendants(conn, [execution_id], f"its parent execution {execution_id} was cancelled")
    return True


async def acancel(execution_id: str, *, reason: str = "cancelled", database_url: str | None = None) -> bool:
    return await in_thread(cancel, execution_id, reason=reason, database_url=database_url)


async def alist(
    *,
    status: str | None = None,
    workflow: str | None = None,
    limit: int = 50,
    database_url: str | None = None,
) -> list[ExecutionInfo]:
    return await in_thread(
        list_executions, status=status, workflow=workflow, limit=limit, database_url=database_url
    )


async def asend_event(
    execution_id: str,
    name: str,
    payload: Any = None,
    *,
    key: str | None = None,
    database_url: str | None = None,
) -> bool:
    return await in_thread(send_event, execution_id, name, payload, key=key, database_url=database_url)


async def astart(
    workflow: Workflow | str,
    input: Any = None,
    *,
    id: str | None = None,
    connection: Any = None,
    database_url: str | None = None,
    **options: Any,
) -> ExecutionHandle:
    """`start` for async code; `connection=` may be a psycopg AsyncConnection (asyncio)."""
    handles = await astart_many(
        workflow,
        [input],
        None if id is None else [id],
        connection=connection,
        database_url=database_url,
        _many=False,
        **options,
    )
    return handles[0]


async def astart_many(
    workflow: Workflow | str,
    inputs: Sequence[Any],
    ids: Sequence[str] | None = None,
    *,
    connection: Any = None,
    database_url: str | None = None,
    _many: bool = True,
    **options: Any,
) -> list[ExecutionHandle]:
    """`start_many` for async code; `connection=` may be a psycopg AsyncConnection (asyncio).

    A single start that needs nothing read first joins the process's group commit
    (zart.group_start) without taking a thread: many concurrent callers share one transaction.
    """
    if isinstance(connection, psycopg.AsyncConnection):
        inputs = _as_list(inputs)
        plan, needs_workflow = starting.plan(workflow, inputs, ids, many=_many, **_start_options(options))
        starting.check_connection(connection, is_async=True)
        url = starting.connection_url(connection, database_url)
        rows = await starting.run_in_callers_async_transaction(connection, url, plan, needs_workflow)
        return [ExecutionHandle(row.id, plan.workflow, url, created=row.created) for row in rows]
    if connection is None:
        inputs = _as_list(inputs)
        plan, needs_workflow = starting.plan(workflow, inputs, ids, many=_many, **_start_options(options))
        url = database_url or os.environ.get(ENV_URL) or await in_thread(resolve_url, None)
        if starting.groupable(url, plan, needs_workflow):
            rows = await group_start.group_for(url).astart(plan)
            return [ExecutionHandle(row.id, plan.workflow, url, created=row.created) for row in rows]
    return await in_thread(
        start_many,
        workflow,
        inputs,
        ids,
        connection=connection,
        database_url=database_url,
        _many=_many,
        **options,
    )


async def astart_one(
    workflow: Workflow | str, input: Any, execution_id: str | None, url: str, options: dict[str, Any]
) -> dict[str, Any]:
    """One start as the HTTP API answers it: id, workflow, whether it was created, and its status as
    the start found it ('pending' when created), all from the start's own statement."""
    plan, needs_workflow = starting.plan(
        workflow, [input], None if execution_id is None else [execution_id], **_start_options(options)
    )
    if starting.groupable(url, plan, needs_workflow):
        rows = await group_start.group_for(url).astart(plan)
    else:
        rows = await in_thread(starting.run_in_own_transaction, url, plan, needs_workflow)
    return {"id": rows[0].id, "workflow": plan.workflow, "status": rows[0].status, "created": rows[0].created}


def _start_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - {"queue", "key", "priority", "delay", "run_at"}
    if unknown:
        raise TypeError(f"unexpected start option(s): {', '.join(sorted(unknown))}")
    return {
        "queue": options.get("queue"),
        "key": options.get("key"),
        "priority": options.get("priority", 0),
        "delay": options.get("delay"),
        "run_at": options.get("run_at"),
    }


async def aget(execution_id: str, *, database_url: str | None = None) -> ExecutionHandle:
    return await in_thread(get, execution_id, database_url=database_url)
