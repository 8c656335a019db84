"""The per-process batch completer: many executions' checkpoints in one transaction.

A step costs at least one commit, and one connection commits only a few thousand transactions a
second. So each running execution hands its pending writes (a `Fragment`) to the completer and waits;
the completer commits everything that has gathered as ONE transaction, and while that commit is in
flight the next batch gathers. Under load a batch holds hundreds of executions' checkpoints for the
price of one commit; when idle a batch holds one and costs no added latency (River's BatchCompleter
is the pattern).

Every fragment carries the fencing token of its task (`claims`). The batch first re-checks the tokens
and locks those task rows (sql.WRITE_BATCH; the heartbeat, not the batch, renews the leases);
fragments of tasks that another worker has taken over are dropped and
their executions told so (`commit()` returns False), so a worker whose lease lapsed can never
overwrite the progress of the one that took over.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import attrs
import orjson
import psycopg
import trio
from psycopg_pool import ConnectionPool

from . import sql, worker_metrics
from .db import is_transient
from .logs import log_event
from .shielded import ShieldedEvent
from .trio_pg import TrioConnection, parse_int_array

log = logging.getLogger("zart.completer")

# Back-off between retries of a batch while the database is unreachable: short enough that work
# resumes within about a second of PostgreSQL's return.
_RETRY_MAX_DELAY = 1.0
# A batch waits at most this long for a pooled connection before it counts as a failed attempt.
_CHECKOUT_SECONDS = 5.0


class FragmentRejected(BaseException):
    """PostgreSQL refused this fragment's writes (a value it cannot hold): nothing of it is stored.

    A BaseException, like LeaseLost, so that a workflow's `except Exception:` cannot swallow it and
    carry on as if its progress were durable; the runner fails the execution with `cause`.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class CommitAbandoned(BaseException):
    """The worker is stopping (or its completer died) before this fragment could be committed.

    Whether it was written is unknown; the fencing token makes either outcome safe, and the task's
    next holder resumes from what is durable.
    """


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
    # (stream, seq, value as JSON text): values emitted (zart.emit), with their `emit` entries in `steps`
    stream_values: list[tuple[str, int, str]] = attrs.field(factory=list)
    # Children to start (zart.child), with their 'waiting' entries in `steps`: (id, workflow, input,
    # timeout, queue, queue key, priority, trace context, parent key, fan-out, position, window).
    # (Rare fields default to an empty tuple, made a list by the first writer: a fragment is made
    # for every commit, and each list of its own costs that commit an allocation.)
    child_starts: list[tuple[Any, ...]] | tuple[()] = ()
    # Queues those children may have to create: (name, concurrency, per_key, rate limit, rate period).
    child_queues: list[tuple[Any, ...]] | tuple[()] = ()
    # This execution is a child of that one: its end records its outcome in the parent (with
    # `finish_execution`), in the same transaction...
    parent_id: str | None = None
    # ... in WRITE_BATCH_WITH_CHILDREN itself: a child its parent's worker started and runs at once.
    parent_inline: bool = False
    # It ends while children of it may still run (a timeout, an engine fault): cancel them all.
    cancel_children: bool = False
    # Seconds of lease for the children its worker runs at once (None: none; zart.branches), and,
    # once committed, those START_CHILDREN claimed for it: child id -> task id (claims 1).
    child_lease: float | None = None
    claimed_children: dict[str, int] | None = None
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
    # The execution ended while attempts of it may still be open elsewhere (a workflow timeout
    # with branches running): close them all as (outcome, error_type, error_message).
    close_attempts: tuple[str, str, str] | None = None

    def ends_run(self) -> bool:
        """Whether its commit ends the runner's hold on the task: it hands the task back, ends
        the branch or ends the execution."""
        return self.release_after is not None or self.finish_execution or self.finish_task

    def is_empty(self) -> bool:
        return not (
            self.attempt_starts
            or self.attempt_ends
            or self.steps
            or self.consumed_events
            or self.stream_values
            or self.child_starts
            or self.execution
            or self.branch_tasks
            or self.finish_execution
            or self.fan_in_group is not None
            or self.finish_task
            or self.release_after is not None
            or self.close_attempts is not None
        )


class Committed(enum.IntEnum):
    """What a commit says of its fragment. LOST is false: the task was no longer held by this worker
    (its lease lapsed, or it was cancelled), nothing was written. PAUSED: written, and the execution
    was paused meanwhile (zart.pause): its runner goes no further (zart.journal)."""

    LOST = 0
    YES = 1
    PAUSED = 2


@attrs.frozen
class Written:
    """A batch's answer: the tasks still held (their fragments written), and those of them paused."""

    held: set[int]
    paused: set[int]

    def outcome(self, task_id: int) -> Committed:
        if task_id not in self.held:
            return Committed.LOST
        return Committed.PAUSED if task_id in self.paused else Committed.YES


@attrs.define
class _Waiter:
    done: ShieldedEvent = attrs.field(factory=ShieldedEvent)
    committed: Committed = Committed.LOST
    error: BaseException | None = None


class Completer:
    """Runs in the worker's nursery; `commit()` is called by the execution runners."""

    def __init__(
        self,
        pool: ConnectionPool,
        limiter: trio.CapacityLimiter,
        worker_id: str,
        max_batch: int = 2000,
        connection: TrioConnection | None = None,
        on_doubt: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        # Called after a batch whose first try may have landed unanswered: children that try
        # claimed for this worker at once may now be claimed in its name without being held
        # (WorkerState.in_doubt: the next claim hands them back).
        self._on_doubt = on_doubt
        # Plain batches go through this connection from the trio loop (no thread hop) when given.
        self._connection = connection
        self._limiter = limiter
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._queue: list[tuple[Fragment, _Waiter]] = []
        self._wakeup = trio.Event()
        self._give_up_at = math.inf
        self._closed = False
        self.batches = 0
        self.fragments = 0

    async def commit(self, fragment: Fragment) -> Committed:
        """Make `fragment` durable: Committed.YES, or PAUSED (written, and the execution was paused
        meanwhile: its runner stops), or LOST (false: the task's lease was lost, nothing written).

        Raises FragmentRejected when PostgreSQL refused this fragment's own data (the rest of its
        batch is committed without it), CommitAbandoned when the worker stops first. Not cancellable:
        once handed over, a commit runs to its end, so that a timeout or a stop never leaves the
        caller unsure of what is durable (a cancellation is raised at its next checkpoint).
        """
        waiter = _Waiter()
        if self._closed:
            raise CommitAbandoned("the worker's completer has stopped")
        self._queue.append((fragment, waiter))
        self._wakeup.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.committed

    def give_up_after(self, seconds: float) -> None:
        """Stop retrying through a lost connection `seconds` from now (the worker is stopping)."""
        self._give_up_at = min(self._give_up_at, trio.current_time() + seconds)

    async def run(self) -> None:
        """Commit batches until cancelled. However it ends, no runner is left waiting."""
        in_flight: list[tuple[Fragment, _Waiter]] = []
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._queue:
                    in_flight = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                    await self._commit(in_flight)
                    in_flight = []
        finally:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
            for _, waiter in in_flight + self._queue:
                if not waiter.done.is_set():
                    waiter.error = CommitAbandoned("the worker stopped before this commit ended")
                    waiter.done.set()
            self._queue.clear()

    async def _commit(self, batch: list[tuple[Fragment, _Waiter]]) -> None:
        """Commit `batch`; if PostgreSQL refuses it, find the fragments it refuses by halves.

        One execution's bad value must not fail the others that happen to share its transaction:
        a refused batch is split and each half retried (every write is idempotent), down to the
        single fragment that is refused, whose runner alone gets the error.
        """
        fragments = [fragment for fragment, _ in batch]
        began = trio.current_time()
        try:
            written, doubtful = await self._write_with_retries(fragments)
            if doubtful:
                written = await self._after_doubt(fragments, written)
        except CommitAbandoned as exc:
            for _, waiter in batch:
                waiter.error = CommitAbandoned(str(exc))
                waiter.done.set()
            return
        except Exception as exc:
            if len(batch) > 1:
                log_event(log, "checkpoint.split", logging.WARNING, fragments=len(batch), error=exc)
                middle = len(batch) // 2
                await self._commit(batch[:middle])
                await self._commit(batch[middle:])
                return
            fragment, waiter = batch[0]
            log_event(
                log,
                "checkpoint.rejected",
                logging.ERROR,
                execution=fragment.execution_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            waiter.error = FragmentRejected(exc)
            waiter.done.set()
            return
        self.batches += 1
        self.fragments += len(batch)
        if worker_metrics.enabled:
            ends = (end for f in fragments if f.task_id in written.held for end in f.attempt_ends)
            worker_metrics.record_commit(ends, len(batch), trio.current_time() - began)
        for fragment, waiter in batch:
            waiter.committed = written.outcome(fragment.task_id)
            waiter.done.set()

    async def _write_with_retries(self, fragments: list[Fragment]) -> tuple[Written, bool]:
        """Commit a batch, retrying for as long as the database is unreachable; whether a try
        failed before the one that answered (the first may then have landed: `_after_doubt`).

        Safe to repeat even when a commit's outcome is unknown: every write of a batch is
        idempotent (ON CONFLICT, upserts, re-checked fencing tokens), and if the leases lapse
        meanwhile, the re-checked tokens drop the fragments instead of writing them. There is no
        time limit but the worker's stop: an outage, however long, costs leases, never data.
        """
        delay = 0.05
        lost_at: float | None = None
        while True:
            try:
                if self._connection is not None and all(_is_plain(f) for f in fragments):
                    written = await self._write_plain(self._connection, fragments)
                else:
                    written = await trio.to_thread.run_sync(
                        partial(self._write, fragments), limiter=self._limiter
                    )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                now = trio.current_time()
                if lost_at is None:
                    lost_at = now
                    log_event(log, "database.lost", logging.WARNING, error=exc)
                if now >= self._give_up_at:
                    raise CommitAbandoned(f"stopped while the database was unreachable ({exc})") from exc
                await trio.sleep(min(delay, max(0.0, self._give_up_at - now)))
                delay = min(delay * 2, _RETRY_MAX_DELAY)
                continue
            if lost_at is not None:
                log_event(log, "database.reconnected", after_seconds=round(trio.current_time() - lost_at, 1))
            return written, lost_at is not None

    async def _after_doubt(self, fragments: list[Fragment], written: Written) -> Written:
        """The answer to a batch retried after a try whose outcome is unknown.

        A fragment that ends its run (the execution's end, a branch's end, a hand-back) and whose
        first try landed finds, on the retry, its task gone or unclaimed: the fencing token calls
        it lost, though it was its own write. Those are looked for by what they left
        (sql.CONFIRM_LANDED) and count as written, so their runners end as they did, not with a
        `lease.lost`. A fragment whose task the retry still found held was written by the retry
        (every write is idempotent); one that does not end its run and was not held really lost
        its lease (its runner must stop: it cannot know what else ran meanwhile).
        """
        if self._on_doubt is not None:
            self._on_doubt()
        ending = [f for f in fragments if f.task_id not in written.held and f.ends_run()]
        if not ending:
            return written
        evidence = orjson.dumps(
            [
                [
                    f.task_id,
                    f.claims,
                    f.execution_id,
                    f.execution[0] if f.execution and f.execution[0] in sql.TERMINAL_STATUSES else None,
                    [step[0] for step in f.steps],
                ]
                for f in ending
            ]
        ).decode()

        landed: list[int] = []
        for delay in (0.0, 0.1, 0.5):  # the connection that just answered, or a fresh one
            await trio.sleep(delay)
            try:
                with trio.CancelScope(shield=True):
                    landed = await self._confirm_landed(evidence)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
        # Not confirmed (or unknown again): lost, as the fencing token says; nothing is wrong.
        if landed:
            log_event(log, "commit.confirmed", fragments=len(landed), of=len(ending))
        return Written(written.held | set(landed), written.paused)

    async def _confirm_landed(self, evidence: str) -> list[int]:
        params = {"fragments": evidence}
        if self._connection is not None:
            rows = await self._connection.query(sql.CONFIRM_LANDED, params)
            return [int(row[0]) for row in rows if row[0] is not None]

        def confirm() -> list[int]:
            with self._pool.connection(timeout=_CHECKOUT_SECONDS) as conn:
                return [row[0] for row in conn.execute(sql.CONFIRM_LANDED, params)]

        return await trio.to_thread.run_sync(confirm, limiter=self._limiter)

    async def _write_plain(self, connection: TrioConnection, fragments: list[Fragment]) -> Written:
        """A batch of plain fragments: WRITE_BATCH alone, from the trio loop (zart.trio_pg)."""
        fragments = sorted(fragments, key=lambda f: f.task_id)  # lock order: no deadlocks
        children = any(_runs_children_at_once(f) for f in fragments)
        statement = sql.WRITE_BATCH_WITH_CHILDREN if children else sql.WRITE_BATCH
        rows = await connection.query(statement, self._batch_params(fragments, True, children))
        if not rows:
            return Written(set(), set())
        if children:
            _claimed_at_once(rows[0][4], fragments)
        return Written(set(parse_int_array(rows[0][0])), set(parse_int_array(rows[0][3])))

    def _write(self, fragments: list[Fragment]) -> Written:
        """Commit the batch (runs in a worker thread). A batch of plain checkpoints (the common case:
        attempts, steps, an execution's status or end) is ONE statement outside a transaction, so
        one round trip and one commit; a batch with waits, branches or fan-in is one transaction
        in two round trips: the fencing statement, then the other writes with the COMMIT."""
        with self._pool.connection(timeout=_CHECKOUT_SECONDS) as conn:
            if all(_is_plain(f) for f in fragments):
                return self.write_batch(conn, fragments)
            with conn.pipeline(), conn.transaction():
                return self.write_batch(conn, fragments)

    def write_batch(self, conn: psycopg.Connection, fragments: list[Fragment]) -> Written:
        """The batch's statements (inside the caller's transaction unless every fragment is plain;
        in pipeline mode the writes after the first are sent together: nothing of theirs is read
        back); the task ids still held."""
        fragments = sorted(fragments, key=lambda f: f.task_id)  # lock order: no deadlocks
        # The workflow tasks this batch may wake: of the fan-outs it finishes a branch of, and the
        # parents of the children it ends (FINISH_CHILDREN).
        fan_in = sorted(
            {f.execution_id for f in fragments if f.fan_in_group is not None}
            | {f.parent_id for f in fragments if _ends_child_generally(f) and f.parent_id is not None}
        )
        if fan_in:
            conn.execute(
                sql.LOCK_TASKS_FOR_FAN_IN,
                {"ids": [f.task_id for f in fragments], "execution_ids": fan_in},
            )
        # Attempts closed at an execution's end must see its tasks' deletion, which may wait for a
        # batch that holds one of them: then the deletion is a later statement (see _apply).
        closing = any(f.close_attempts for f in fragments)
        children = any(_runs_children_at_once(f) for f in fragments)
        statement = sql.WRITE_BATCH_WITH_CHILDREN if children else sql.WRITE_BATCH
        row = conn.execute(statement, self._batch_params(fragments, not closing, children)).fetchone()
        if row and children:
            _claimed_at_once(row[4], fragments)
        valid = set(row[0]) if row else set()
        written = Written(valid, set(row[3]) if row else set())
        kept = [f for f in fragments if f.task_id in valid]
        if kept and not all(_is_plain(f) for f in kept):
            self._apply(conn, kept, end_executions=closing)
        return written

    def _batch_params(
        self, fragments: list[Fragment], end_in_batch: bool, children: bool = False
    ) -> dict[str, Any]:
        """WRITE_BATCH's parameters for `fragments` (in task id order); WRITE_BATCH_WITH_CHILDREN's
        with `children`: the queues its children may have to create as well."""
        params: dict[str, Any] = {
            "ids": [f.task_id for f in fragments],
            "claims": [f.claims for f in fragments],
            "worker": self._worker_id,
            "fragments": _fragments(fragments, end_in_batch, children),
        }
        if children:
            declare = {q[0]: q for f in fragments if f.child_lease is not None for q in f.child_queues}
            params["declare"] = orjson.dumps(list(declare.values())).decode()
        return params

    def _apply(self, conn: psycopg.Connection, fragments: list[Fragment], end_executions: bool) -> None:
        """Queue the writes WRITE_BATCH does not make; none is read back, so in pipeline mode they go
        to the server with the COMMIT. A task that becomes ready now (a release to run at once, a
        fan-in, the next item of a map's window, the slot of a limited queue freed) wakes the
        claimers by the statement's own NOTIFY; new branch tasks by the one queued here."""
        consumed = [event for f in fragments for event in f.consumed_events]
        if consumed:
            conn.execute(sql.CONSUME_EVENTS, _columns(consumed, ("ids", "step_keys")))
        emitted = [(f.execution_id, *value) for f in fragments for value in f.stream_values]
        if emitted:  # its NOTIFY wakes the stream readers with the COMMIT
            conn.execute(sql.INSERT_STREAM_VALUES, _columns(emitted, _STREAM_COLUMNS))
        starting = [f for f in fragments if f.child_starts and f.child_lease is None]
        children = [(*row, f.execution_id) for f in starting for row in f.child_starts]
        if children:  # before RELEASE_TASKS, which looks for children left to wait for
            declare = {q[0]: q for f in starting for q in f.child_queues}
            params = _columns(children, _CHILD_COLUMNS)
            params["declare"] = orjson.dumps(list(declare.values())).decode()
            conn.execute(sql.START_CHILDREN, params)
        branches = [(f.execution_id, *row) for f in fragments for row in f.branch_tasks]
        if branches:
            conn.execute(sql.INSERT_BRANCH_TASKS, _columns(branches, _BRANCH_COLUMNS))
            conn.execute(sql.NOTIFY_TASKS)
        finished = [f.task_id for f in fragments if f.finish_task]
        if finished:
            conn.execute(sql.DELETE_TASKS, {"ids": finished})
        over = [f.execution_id for f in fragments if f.finish_execution]
        if over and end_executions:
            # Wakes the claimers if an execution of a limited queue ended: another may begin.
            conn.execute(sql.DELETE_EXECUTION_TASKS, {"ids": over})
            conn.execute(sql.NOTIFY_FINISHED, {"ids": over})
        ended = [f for f in fragments if f.finish_execution]
        if any(f.cancel_children for f in ended):
            cancel_descendants(conn, [f.execution_id for f in ended if f.cancel_children], _PARENT_ENDED)
        children_ended = [f.execution_id for f in ended if _ends_child_generally(f)]
        if children_ended:
            conn.execute(sql.FINISH_CHILDREN, {"ids": children_ended})
        # After the tasks' deletion, which waited for any batch still holding one of them: a
        # branch attempt that batch started is visible here, and closed too.
        closing = [(f.execution_id, *f.close_attempts) for f in fragments if f.close_attempts]
        if closing:
            conn.execute(sql.CLOSE_OPEN_ATTEMPTS, _columns(closing, _CLOSE_COLUMNS))
        released = [
            f for f in fragments if f.release_after is not None and not (f.finish_task or f.finish_execution)
        ]
        if released:
            conn.execute(
                sql.RELEASE_TASKS,
                {
                    "ids": [f.task_id for f in released],
                    "claims": [f.claims for f in released],
                    "delays": [f.release_after for f in released],
                    "events": [f.wake_on_event for f in released],
                    "branches": [f.wake_when_branches_done for f in released],
                    "worker": self._worker_id,
                },
            )
        fanned_in = [f for f in fragments if f.fan_in_group is not None]
        if fanned_in:
            groups: dict[tuple[str, int], int] = {}
            for f in fanned_in:
                group = (f.execution_id, f.fan_in_group)
                groups[group] = groups.get(group, 0) + 1
            conn.execute(
                sql.READY_PARKED_BRANCHES,
                {
                    "execution_ids": [g[0] for g in groups],
                    "grps": [g[1] for g in groups],
                    "counts": list(groups.values()),
                },
            )
            conn.execute(sql.WAKE_FANNED_IN, {"execution_ids": sorted({f.execution_id for f in fanned_in})})


_CHILD_COLUMNS = (
    "ids",
    "workflows",
    "inputs",
    "timeouts",
    "queues",
    "keys",
    "priorities",
    "traces",
    "parent_keys",
    "parent_groups",
    "parent_seqs",
    "windows",
    "parent_ids",
)
_PARENT_ENDED = "its parent execution ended before it did"


def _runs_children_at_once(fragment: Fragment) -> bool:
    """Whether the fragment starts children its worker runs at once, or ends one: its batch is
    WRITE_BATCH_WITH_CHILDREN (still one statement, plain)."""
    return bool(fragment.child_starts and fragment.child_lease is not None) or (
        fragment.finish_execution and fragment.parent_inline and fragment.parent_id is not None
    )


def _ends_child_generally(fragment: Fragment) -> bool:
    """Whether the fragment ends a child whose end goes through FINISH_CHILDREN (after the parents'
    tasks are locked): every child but those its parent's worker started and ran at once."""
    return fragment.finish_execution and fragment.parent_id is not None and not fragment.parent_inline


def _claimed_at_once(answer: bytes | str | None, fragments: list[Fragment]) -> None:
    """WRITE_BATCH_WITH_CHILDREN's fifth column: the children it created and claimed for this worker
    ([[child id, task id], ...] as JSON text), filed under their parents' fragments."""
    if not answer:
        return
    claimed = {child_id: task_id for child_id, task_id in orjson.loads(answer)}
    for fragment in fragments:
        if fragment.child_lease is not None:
            starts = fragment.child_starts
            fragment.claimed_children = {s[0]: claimed[s[0]] for s in starts if s[0] in claimed}


def cancel_descendants(conn: psycopg.Connection, ids: list[str], reason: str) -> list[str]:
    """Cancel every unfinished execution below `ids` (children, theirs...), in the caller's
    transaction: their tasks go, their open attempts are closed, their waiters told. Their entries in
    their own parents' histories record the cancellation, without waking anyone (those parents are
    ending or cancelled too: they have no task left to wake). The cancelled ids."""
    below = [row[0] for row in conn.execute(sql.SELECT_DESCENDANTS, {"ids": ids}).fetchall()]
    if not below:
        return []
    conn.execute(sql.CANCEL_EXECUTIONS, {"ids": below, "reason": reason})
    conn.execute(sql.DELETE_EXECUTION_TASKS, {"ids": below})
    conn.execute(sql.ABANDON_OPEN_ATTEMPTS_OF, {"ids": below})
    conn.execute(sql.FINISH_CHILDREN, {"ids": below})
    conn.execute(sql.NOTIFY_FINISHED, {"ids": below})
    return below


_STREAM_COLUMNS = ("execution_ids", "streams", "seqs", "values")
_CLOSE_COLUMNS = ("execution_ids", "outcomes", "error_types", "error_messages")
_BRANCH_COLUMNS = ("execution_ids", "step_keys", "payloads", "seqs", "grps", "readies")


def _is_plain(fragment: Fragment) -> bool:
    """Whether WRITE_BATCH alone makes all of this fragment durable: checkpoints, attempts, the
    execution's status and its end, but no wait, branch, fan-in or emitted value (zart.emit: the
    common case pays nothing for streams)."""
    return not (
        fragment.consumed_events
        or fragment.stream_values
        or (fragment.child_starts and fragment.child_lease is None)
        or _ends_child_generally(fragment)
        or (fragment.finish_execution and fragment.cancel_children)
        or fragment.branch_tasks
        or fragment.finish_task
        or fragment.fan_in_group is not None
        or fragment.release_after is not None
        or fragment.close_attempts is not None
    )


def _fragments(fragments: list[Fragment], end_in_batch: bool, children: bool = False) -> str:
    """The fragments as WRITE_BATCH's one JSON parameter.

    These writes run for every step: psycopg adapts a list parameter element by element in Python,
    which cost about 15% of a worker's CPU; orjson writes all of it in one call (the values are text
    Zart made storable, numbers and timestamps, as RFC 3339 text)."""
    rows: list[tuple[Any, ...]] = [
        (
            f.task_id,
            f.execution_id,
            f.attempt_ends,
            f.attempt_starts,
            f.steps,
            f.execution,
            f.finish_execution and end_in_batch,
        )
        for f in fragments
    ]
    if children:  # WRITE_BATCH_WITH_CHILDREN: the parent of a child run at once, and the ones it starts
        rows = [
            (
                *row,
                f.parent_id if f.finish_execution and f.parent_inline else None,
                [(*start, f.child_lease) for start in f.child_starts if f.child_lease is not None],
            )
            for row, f in zip(rows, fragments, strict=True)
        ]
    return orjson.dumps(rows).decode()


def _columns(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Rows to one array per column, the shape `unnest` takes."""
    return {name: list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}
