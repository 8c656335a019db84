"""Transactional steps (`@zart.transaction`): a step's writes and its checkpoint in one transaction.

A plain step runs at least once: a crash after its effect and before its checkpoint runs it again. A
transactional step's body gets a connection inside a transaction on Zart's database, and its
checkpoint and attempt record are written in that same transaction, so its writes to the
application's tables happen exactly once: committed with the checkpoint, or rolled back with it.

Fencing. The transaction's first statements lock the execution's task row `FOR KEY SHARE`, checking
that this worker still holds it (its `claims` token): once that passes, no other worker can take the
task over until the transaction ends (a claim locks the rows it takes `FOR UPDATE SKIP LOCKED`, and
skips this one), so a commit can never come from a worker that lost its lease. `KEY SHARE` lets the
heartbeat renew the lease and the completer write the execution's other checkpoints (`WRITE_BATCH`
locks `FOR NO KEY UPDATE`) meanwhile. A worker stopped in the middle of a body (SIGSTOP) would hold
that lock: `idle_in_transaction_session_timeout`, set to the lease, lets the server end its
transaction, which is rolled back, and another worker then takes the execution over.

Conflicts. A serialization failure or a deadlock is no fault of the body: the transaction runs again
at once, after a short jittered pause, and it is not an attempt of the retry policy. Any other
exception rolls the transaction back and is the attempt's failure (recorded by `zart.steps`, apart).

Timeouts. A body runs in a thread, which cannot be interrupted: the step's timeout is the
transaction's `statement_timeout`, and a body that is still running when it passes is rolled back
instead of committed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import partial
from typing import Any

import attrs
import psycopg
import trio
from psycopg import errors
from psycopg_pool import ConnectionPool

from . import serde, sql
from .db import is_transient

# The isolation levels a transactional step may ask for, and psycopg's names for them (its BEGIN
# then says which: no statement of its own).
ISOLATION_LEVELS = {
    "read committed": psycopg.IsolationLevel.READ_COMMITTED,
    "repeatable read": psycopg.IsolationLevel.REPEATABLE_READ,
    "serializable": psycopg.IsolationLevel.SERIALIZABLE,
}
# Serialization failures and deadlocks: the transaction runs again, up to this many times in all,
# after a pause drawn between 0 and `_CONFLICT_PAUSE` times the tries so far (seconds).
_CONFLICT_TRIES = 100
_CONFLICT_PAUSE = 0.005


def check_isolation(value: Any, what: str) -> str:
    if value not in ISOLATION_LEVELS:
        levels = ", ".join(repr(level) for level in ISOLATION_LEVELS)
        raise ValueError(f"{what}: isolation must be one of {levels}, not {value!r}")
    return value


def interrupted(exc: BaseException) -> bool:
    """Whether an attempt ended because its connection or the database went away (its outcome,
    when the commit was under way, is unknown), not because of its body: a statement the body's
    own limits cancelled (`statement_timeout`, `lock_timeout`) is the body's failure."""
    if isinstance(exc, (errors.QueryCanceled, errors.LockNotAvailable)):
        return False
    return is_transient(exc)


class LeaseGone(Exception):
    """The task is no longer this worker's: the transaction was rolled back, nothing written."""


class TimeUp(Exception):
    """The attempt's timeout passed before its commit: the transaction was rolled back."""


def run_with_retries(
    begin: Callable[[str], AbstractContextManager[psycopg.Connection]],
    isolation: str,
    body: Callable[[psycopg.Connection], Any],
) -> Any:
    """`body(conn)` in a transaction from `begin(isolation)`, run again after a serialization failure
    or a deadlock; what it returns. Any other exception is raised, the transaction rolled back."""
    for tries in range(1, _CONFLICT_TRIES + 1):
        try:
            with begin(isolation) as conn:
                return body(conn)
        except (errors.SerializationFailure, errors.DeadlockDetected):
            if tries == _CONFLICT_TRIES:
                raise
        time.sleep(random.uniform(0, _CONFLICT_PAUSE * tries))
    raise AssertionError("unreachable")


@attrs.frozen
class Fence:
    """The execution's task and token, and the step's checkpoint to write with the body's writes."""

    execution_id: str
    task_id: int
    claims: int
    worker_id: str
    step_key: str
    position: int
    attempt: int
    started_at: datetime


@attrs.define
class TransactionRunner:
    """A worker's transactional steps: their connections (a pool of their own, opened at the first
    such step, so that long bodies never keep the completer or the claimer from a connection) and
    how many run at once."""

    open_pool: Callable[[], ConnectionPool]
    lease: float
    limiter: trio.CapacityLimiter
    _pool: ConnectionPool | None = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = self.open_pool()
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def attempt(
        self,
        fence: Fence,
        isolation: str,
        timeout: float | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        """One attempt: the body and the checkpoint, committed together; the result as JSON text.

        Raises the body's exception, TimeUp, or LeaseGone; the transaction is then rolled back.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        body = partial(self._body, fence=fence, deadline=deadline, fn=fn, args=args, kwargs=kwargs)
        try:
            return await trio.to_thread.run_sync(
                partial(run_with_retries, self._begin, isolation, body), limiter=self.limiter
            )
        except errors.QueryCanceled:
            if timeout is None:
                raise
            raise TimeUp from None

    @contextmanager
    def _begin(self, isolation: str) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            conn.isolation_level = ISOLATION_LEVELS[isolation]
            with conn.transaction():
                yield conn

    def _body(
        self,
        conn: psycopg.Connection,
        *,
        fence: Fence,
        deadline: float | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        statement = None
        if deadline is not None:
            statement = f"{max(1, int((deadline - time.monotonic()) * 1000))}ms"
        (held,) = conn.execute(
            sql.BEGIN_TRANSACTIONAL_STEP,
            {
                "idle": f"{int(self.lease * 1000)}ms",
                "statement": statement,
                "id": fence.task_id,
                "claims": fence.claims,
                "worker": fence.worker_id,
            },
        ).fetchone()
        if not held:
            raise LeaseGone(f"lost the lease on execution {fence.execution_id!r}")
        result = fn(conn, *args, **kwargs)
        output = serde.dumps(result, f"the result of step {fence.step_key!r}").decode()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeUp
        conn.execute(
            sql.RECORD_TRANSACTIONAL_STEP,
            {
                "execution_id": fence.execution_id,
                "step_key": fence.step_key,
                "seq": fence.position,
                "output": output,
                "attempt": fence.attempt,
                "worker": fence.worker_id,
                "started_at": fence.started_at,
            },
        )
        return output


def run_alone(
    begin: Callable[[str], AbstractContextManager[psycopg.Connection]],
    isolation: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """A transactional step called outside a workflow: its body in a transaction of its own,
    committed when it returns (no checkpoint: there is no execution)."""
    return run_with_retries(begin, isolation, lambda conn: fn(conn, *args, **kwargs))
