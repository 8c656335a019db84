"""What the worker's pieces share: the tasks held, the claimer's wake-up, the stop flags, the pool.

The worker's pieces (`zart.claimer`, `zart.runner`, `zart.leases`, `zart.listener`) run as tasks of
one trio loop and never call each other: they meet here, in one `WorkerState` passed to each, rather
than reaching into each other's attributes. Everything in it is read and written from the trio
thread only; the database work that hops to a thread (`WorkerDb`) takes copies of what it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import psycopg
import trio
from psycopg_pool import ConnectionPool

from .logs import log_event
from .replay import Checkpoint, LastAttempt, PendingEvent
from .wake_routing import WakeRouter

if TYPE_CHECKING:
    from .replay import ExecutionContext

log = logging.getLogger("zart.worker")
T = TypeVar("T")

# Retries through an outage (the claim, the listener's reconnection, the start-up) are at most this
# far apart: however long the outage, the worker notices the database's return within about a second.
DB_RETRY_SECONDS = 1.0


@attrs.frozen
class ClaimedTask:
    """A task this worker claimed, with everything its runner needs loaded in the claim's thread hop."""

    id: int
    claims: int  # the fencing token: every write for this task carries it
    execution_id: str
    kind: str  # 'workflow', or 'step' for a branch of a fan-out
    workflow: str
    status: str
    input_json: str | None
    seconds_to_deadline: float | None
    history: list[Checkpoint]
    last_attempts: dict[str, LastAttempt]
    events: list[PendingEvent]
    # Branch tasks (kind 'step') only: the step to run, its arguments, its position and fan-out.
    step_key: str | None = None
    payload_json: str | None = None
    seq: int | None = None
    group: int | None = None
    # A timer claimed ahead (sql.CLAIM_TASKS's lookahead): seconds from the claim to its moment,
    # and the moment on the database's clock (seconds since the epoch).
    seconds_to_due: float = 0.0
    due_epoch: float | None = None
    # A child execution (zart.child): its parent's id, and whether its parent's worker started it
    # to run at once (Runner.start_child): its end goes with WRITE_BATCH_WITH_CHILDREN.
    parent_id: str | None = None
    inline_parent: bool = False
    # The trace context of the code that started the execution (zart.tracing), or None.
    trace_context: str | None = None


@attrs.define
class Held:
    """A claimed task while this worker holds it: its runner's cancel scope and execution."""

    task: ClaimedTask
    scope: trio.CancelScope  # cancelled when the lease is lost
    claimed_at: float  # trio's clock when the claim's answer arrived (before the histories' reads)
    due_at: float | None = None  # a timer claimed ahead: its moment on trio's clock (zart.claimer)
    execution: ExecutionContext | None = None  # set once the runner has built it


def unwatched(loop: str) -> None:
    """`WorkerState.went_round` when nobody watches: no watchdog, or a worker draining or stopping."""


@attrs.define
class WorkerState:
    """The worker's shared state; each field says who writes it and why others read it."""

    worker_id: str
    # Held tasks by task id. The claimer adds an entry per claimed task, and a runner removes its
    # own entry when it ends (not at a stop: the stop hands every entry's task back); the heartbeat
    # renews their leases.
    held: dict[int, Held] = attrs.field(factory=dict)
    # Set to make the claimer look again now (a notification, a free slot, a rescheduled task); the
    # claimer replaces it by a fresh event at each round.
    wake: trio.Event = attrs.field(factory=trio.Event)
    # Which notifications wake this worker, when several groups of workers share the database
    # (zart.wake_routing); None: every one (a worker that does not listen).
    router: WakeRouter | None = None
    # Set when tasks may be claimed in this worker's name without being held (a claim whose answer
    # was lost, a runner that ended abnormally): the next claim hands them back first.
    in_doubt: bool = False
    # Called by the heartbeat and the claim loop each time they go round, with the loop's name: the
    # supervisor's watchdog (zart.watchdog) kills a worker whose loops stopped going round.
    went_round: Callable[[str], None] = unwatched
    # A drain stops the claims; `drained` is set by the last runner to end during a drain.
    draining: bool = False
    drained: trio.Event = attrs.field(factory=trio.Event)
    # The stop has begun: runners cancelled from here on leave their entry for the hand-back.
    stopping: bool = False
    claim_queries: int = 0  # how many claim queries this worker ran (see the claim baton)
    executions_finished: int = 0  # runs that ended or suspended (a retry, a sleep, a wait)

    def wake_claimer(self) -> None:
        """Make the claimer look again now (whichever event it is waiting on)."""
        self.wake.set()

    def set_in_doubt(self) -> None:
        """Tasks may be claimed in this worker's name that it does not hold: the claimer hands
        them back now (from the trio thread only, as every writer of `in_doubt`)."""
        self.in_doubt = True
        self.wake.set()


@attrs.frozen
class WorkerDb:
    """The worker's pool, driven from trio: one thread hop per whole transaction.

    psycopg's AsyncConnection needs asyncio and does not run under trio, so the sync pool is used
    from threads, bounded by a CapacityLimiter the size of the pool. The completer shares the limiter.
    """

    pool: ConnectionPool
    limiter: trio.CapacityLimiter
    worker_id: str

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run `fn(conn, *args)` on a pooled connection in a thread: one hop per transaction.

        `timeout` bounds the wait for a connection (the pool's own default is 30 s).
        """
        pool = self.pool

        def call() -> T:
            with pool.connection(timeout=timeout) as conn:
                return fn(conn, *args)

        return await trio.to_thread.run_sync(call, limiter=self.limiter)

    async def run_quietly(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """`run`, but a database error is logged, not raised (paths that must go on: a stop)."""
        try:
            return await self.run(fn, *args, timeout=timeout)
        except (psycopg.Error, OSError) as exc:
            log_event(log, "worker.db_error", logging.WARNING, worker=self.worker_id, error=exc)
            return None
