"""Starting executions: `zart.start`, `zart.start_many` and their async twins.

Every start, of one input or ten thousand, is one statement (`sql.START_EXECUTIONS`): the executions,
their workflow tasks and the wake-up NOTIFY, in one round trip and one transaction, ours or the
caller's (`connection=`: the outbox pattern; nothing exists or runs unless the caller commits).

Everything that can be checked without the database is checked before anything is sent, so bad input
fails at the call with nothing written.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import psycopg
from psycopg import conninfo
from psycopg.pq import TransactionStatus

from . import queues, serde, sql, tracing
from .errors import DuplicateExecution, UnknownQueue, UnknownWorkflow
from .names import check_name
from .pools import transaction

if TYPE_CHECKING:
    from .registry import Workflow

MAX_ID_LENGTH = 255

# Queues this process knows exist in a database (url -> names), so that a start into a queue it
# already used reads nothing first. Only ever grows: a queue row is never deleted.
_known_queues: dict[str, set[str]] = {}
_known_lock = threading.Lock()


@attrs.frozen
class Plan:
    """What one start call inserts, checked."""

    workflow: str
    timeout: float | None
    queue: str
    key: str | None
    priority: int
    delay: float
    run_at: datetime | None
    ids: list[str]
    inputs: list[str]
    # Whether the caller named the queue (else it is the workflow's own, or 'default').
    queue_given: bool
    # The queue's limits when this process knows the queue (a zart.Queue, or the queue its workflow
    # names): the start creates it in the database if no worker did yet (sql.START_EXECUTIONS).
    declare: queues.Limits | None
    # The caller's trace context (zart.tracing), continued by the executions' spans.
    trace: str | None = None

    def params(self) -> dict[str, Any]:
        return statement_params([self])


def statement_params(plans: Sequence[Plan]) -> dict[str, Any]:
    """sql.START_EXECUTIONS's parameters for these plans: the executions' ids and inputs in order,
    each plan's options once (with how many of the rows are its own), and one declaration per queue
    that some plan may have to create."""
    ids: list[str] = []
    inputs: list[str] = []
    options: list[tuple[Any, ...]] = []
    declarations: dict[str, queues.Limits] = {}
    for p in plans:
        ids += p.ids
        inputs += p.inputs
        options.append(
            (p.workflow, p.timeout, p.queue, p.key, p.priority, p.delay, p.run_at, len(p.ids), p.trace)
        )
        if p.declare is not None:
            declarations.setdefault(p.queue, p.declare)
    declare = [declaration_row(name, limits) for name, limits in declarations.items()]
    return {
        "ids": ids,
        "inputs": inputs,
        "plans": orjson.dumps(options).decode(),
        "declare": orjson.dumps(declare).decode(),
    }


def declaration_row(name: str, limits: queues.Limits) -> tuple[Any, ...]:
    """A queue to create if it is new, as the start statements take it (sql._DECLARE_QUEUES)."""
    rate = limits.rate
    return (
        name,
        limits.concurrency,
        limits.per_key,
        rate.limit if rate else None,
        rate.period if rate else None,
    )


@attrs.frozen
class Started:
    """One row of a start: its id, whether this call created it (False: it existed), its status."""

    id: str
    created: bool
    status: str = "pending"


def check_id(execution_id: Any) -> str:
    return check_name(execution_id, "execution id", MAX_ID_LENGTH)


def plan(
    workflow: Workflow | str,
    inputs: Sequence[Any],
    ids: Sequence[Any] | None,
    *,
    queue: Any,
    key: Any,
    priority: Any,
    delay: Any,
    run_at: Any,
    many: bool = False,
) -> tuple[Plan, bool]:
    """Check a start call's arguments; (plan, whether the workflow's name needs the database)."""
    # Here, not at the top: the registry imports the workers' modules (trio, ...), which the client's
    # reads (a status, a list) do not need.
    from . import registry
    from .registry import Workflow

    if isinstance(workflow, Workflow):
        name, timeout, workflow_queue, local = workflow.name, workflow.timeout, workflow.queue, True
    elif isinstance(workflow, str):
        found = registry.get_workflow(workflow)
        local = found is not None
        name = workflow
        timeout = found.timeout if found else None
        workflow_queue = found.queue if found else None
    else:
        raise TypeError(f"workflow must be a @zart.workflow function or its name, not {workflow!r}")
    queue_name = queues.resolve(queue) or workflow_queue or queues.DEFAULT
    seconds, when = queues.start_delay(delay, run_at)
    if ids is None:
        id_list = [str(uuid.uuid4()) for _ in inputs]
    else:
        if isinstance(ids, (str, bytes)) or len(ids) != len(inputs):
            raise ValueError(f"ids must be a list of {len(inputs)} execution ids, one per input")
        id_list = [check_id(i) for i in ids]
        seen: set[str] = set()
        for execution_id in id_list:
            if execution_id in seen:
                raise ValueError(f"execution id {execution_id!r} appears twice in one start_many call")
            seen.add(execution_id)
    data = [
        serde.dumps(value, f"the input {f'[{n}] ' if many else ''}of workflow {name!r}").decode()
        for n, value in enumerate(inputs)
    ]
    return (
        Plan(
            workflow=name,
            timeout=timeout,
            queue=queue_name,
            key=queues.check_key(key),
            priority=queues.check_priority(priority),
            delay=seconds or 0.0,
            run_at=when,
            ids=id_list,
            inputs=data,
            declare=_declaration(queue_name, workflow_queue),
            queue_given=queue is not None,
            trace=tracing.carrier(),
        ),
        not local,
    )


def _from_registry(p: Plan, rows: list[tuple[Any, ...]]) -> Plan:
    """The plan of a workflow known only from the workers' registry (its timeout and queue, as a
    worker that imported it registered them), or UnknownWorkflow."""
    registered = {name: (timeout, queue) for name, timeout, queue in rows}
    if p.workflow not in registered:
        from . import registry

        known = sorted(set(registered) | set(registry.workflow_names()))
        listing = ", ".join(repr(n) for n in known) if known else "none"
        raise UnknownWorkflow(
            f"unknown workflow {p.workflow!r}; known workflows: {listing} "
            "(import the module that defines it, or pass --app to the CLI)"
        )
    timeout, queue = registered[p.workflow]
    if p.queue_given or queue is None:
        return attrs.evolve(p, timeout=timeout)
    return attrs.evolve(p, timeout=timeout, queue=queue)


_LISTED_QUEUES = 20


def _unknown_queue(name: str, in_database: list[str]) -> UnknownQueue:
    known = sorted(set(in_database) | {q.name for q in queues.declared_queues()} | {queues.DEFAULT})
    listing = ", ".join(repr(n) for n in known[:_LISTED_QUEUES])
    if len(known) > _LISTED_QUEUES:
        listing += f" and {len(known) - _LISTED_QUEUES} more (see `zart queues`)"
    return UnknownQueue(
        f"unknown queue {name!r}; known queues: {listing} "
        "(declare it with zart.Queue in the workflow's module, or create it with `zart queues set`)"
    )


def _queue_needs_lookup(url_key: str, p: Plan) -> bool:
    if p.queue == queues.DEFAULT or p.declare is not None:
        return False
    with _known_lock:
        return p.queue not in _known_queues.get(url_key, set())


def _remember_queue(url_key: str, name: str) -> None:
    with _known_lock:
        _known_queues.setdefault(url_key, set()).add(name)


def _declaration(name: str, workflow_queue: str | None) -> queues.Limits | None:
    """The limits to create queue `name` with if this process knows it: declared here (a zart.Queue),
    or named by the workflow (no limits)."""
    declared = queues.declared(name)
    if declared is not None:
        return queues.Limits(declared.concurrency, declared.per_key, declared.rate)
    if name == workflow_queue:
        return queues.Limits(None, None, None)
    return None


def outcome(p: Plan, rows: Sequence[tuple[Any, ...]]) -> list[Started]:
    """The plan's rows of sql.START_EXECUTIONS, or DuplicateExecution for an id another workflow has."""
    started = []
    for execution_id, created, existing, status, _notified in rows:
        if not created and existing is not None and existing != p.workflow:
            raise DuplicateExecution(
                f"execution id {execution_id!r} already exists for workflow {existing!r}, not {p.workflow!r}"
            )
        started.append(Started(execution_id, created, status))
    return started


# -- on a connection (ours or the caller's) ---------------------------------------------------------


def run_sync(conn: psycopg.Connection, url_key: str, p: Plan, needs_workflow: bool) -> list[Started]:
    """Insert the plan's executions on `conn`, inside the transaction it is in."""
    if needs_workflow:
        p = _from_registry(p, conn.execute(sql.SELECT_REGISTERED_WORKFLOWS).fetchall())
    if _queue_needs_lookup(url_key, p):
        names = [row[0] for row in conn.execute(sql.SELECT_QUEUE_NAMES).fetchall()]
        if p.queue not in names:
            raise _unknown_queue(p.queue, names)
        _remember_queue(url_key, p.queue)
    rows = conn.execute(sql.START_EXECUTIONS, p.params()).fetchall()
    return outcome(p, rows)


async def run_async(conn: Any, url_key: str, p: Plan, needs_workflow: bool) -> list[Started]:
    """The same on a psycopg AsyncConnection (asyncio)."""
    if needs_workflow:
        cursor = await conn.execute(sql.SELECT_REGISTERED_WORKFLOWS)
        p = _from_registry(p, await cursor.fetchall())
    if _queue_needs_lookup(url_key, p):
        cursor = await conn.execute(sql.SELECT_QUEUE_NAMES)
        names = [row[0] for row in await cursor.fetchall()]
        if p.queue not in names:
            raise _unknown_queue(p.queue, names)
        _remember_queue(url_key, p.queue)
    cursor = await conn.execute(sql.START_EXECUTIONS, p.params())
    return outcome(p, await cursor.fetchall())


# Zart's statements in the caller's transaction run under a savepoint of their own: a start that fails
# half-way (a duplicate id of another workflow among new ones) leaves nothing of itself behind, even
# if the caller catches the error and commits.
_SAVEPOINT = "SAVEPOINT zart_start"
_RELEASE = "RELEASE SAVEPOINT zart_start"
_ROLLBACK = "ROLLBACK TO SAVEPOINT zart_start"


def run_in_callers_transaction(
    conn: psycopg.Connection, url_key: str, p: Plan, needs_workflow: bool
) -> list[Started]:
    conn.execute(_SAVEPOINT)
    try:
        started = run_sync(conn, url_key, p, needs_workflow)
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            conn.execute(_ROLLBACK)
            conn.execute(_RELEASE)
        raise
    conn.execute(_RELEASE)
    return started


async def run_in_callers_async_transaction(
    conn: Any, url_key: str, p: Plan, needs_workflow: bool
) -> list[Started]:
    await conn.execute(_SAVEPOINT)
    try:
        started = await run_async(conn, url_key, p, needs_workflow)
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            await conn.execute(_ROLLBACK)
            await conn.execute(_RELEASE)
        raise
    await conn.execute(_RELEASE)
    return started


def run_in_own_transaction(url: str, p: Plan, needs_workflow: bool) -> list[Started]:
    with transaction(url) as conn:
        return run_sync(conn, url, p, needs_workflow)


def groupable(url: str, p: Plan, needs_workflow: bool) -> bool:
    """Whether the start may join the process's group commit (zart.group_start): one execution,
    nothing to read first (the workflow is known here, the queue too). A `start_many` is already one
    statement; and a group must not hold a start that could fail half-way (DuplicateExecution)."""
    return len(p.ids) == 1 and not needs_workflow and not _queue_needs_lookup(url, p)


# -- the caller's connection -------------------------------------------------------------------------


def check_connection(connection: Any, *, is_async: bool) -> None:
    """`connection=` must be an open psycopg connection inside a transaction, or nothing is written."""
    sync_ok = isinstance(connection, psycopg.Connection)
    async_ok = isinstance(connection, psycopg.AsyncConnection)
    if not (sync_ok or async_ok):
        raise TypeError(
            "connection= takes a psycopg.Connection or psycopg.AsyncConnection, "
            f"not {type(connection).__name__}"
        )
    if async_ok and not is_async:
        raise TypeError("connection= is a psycopg.AsyncConnection: use `await zart.astart(...)`")
    if connection.closed:
        raise ValueError("connection= is closed: start inside an open connection's transaction")
    status = connection.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise ValueError(
            "connection= is in a failed transaction (an earlier statement errored): roll it back first"
        )
    # Idle without autocommit (a Django atomic() block before its first query, a fresh psycopg
    # connection): our first statement begins the transaction, which the caller commits or not.
    if status != TransactionStatus.INTRANS and not (
        status == TransactionStatus.IDLE and not connection.autocommit
    ):
        raise ValueError(
            "connection= is not inside a transaction (an autocommit connection outside "
            "`with conn.transaction():`): the execution must exist only if the caller's transaction commits"
        )


def connection_url(connection: Any, database_url: str | None) -> str:
    """The URL handles use later: the explicit one, else the connection's own (with its password)."""
    if database_url:
        return database_url
    info = connection.info
    params = info.get_parameters()
    if info.password:
        params["password"] = info.password
    return conninfo.make_conninfo("", **params)
