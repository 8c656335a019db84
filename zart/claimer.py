"""The claimer: takes ready tasks in batches and starts a runner for each.

A claim takes up to `batch` ready tasks (`FOR UPDATE SKIP LOCKED`, sql.CLAIM_TASKS) and loads what
their runners need (an execution's history, or a branch's own step) in the same thread hop. When
there is nothing to claim, the claimer sleeps until a wake-up (`WorkerState.wake`: a notification,
a free slot, a rescheduled task), the earliest future `run_at`, or the poll interval, whichever is
first. Timers (a sleep's end, a retry's back-off) due within `lookahead` are claimed ahead, and
their executions are replayed at once and wait in the worker for the moment (`zart.runner`): they
come due on time, not a claim's round trip late.

The workers of one supervisor share a claim baton, so that one notification makes one of them claim,
not all of them. With more workers than CPUs, the first ones (one per CPU: the primaries) take the
work while they have room, and the others (spares, which do not listen) claim only when every
primary is full: each claim and each batch then serves more executions, as with one process per
CPU, and the spares take the overflow. When more may be ready than a worker takes, it hands over
to the roomiest sibling through that one's pipe (`zart.shared_claims.SharedClaims.hand_over`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import trio

from . import sql, worker_metrics
from .db import is_transient
from .dbclock import DbClock
from .logs import log_event
from .replay import Checkpoint, LastAttempt, PendingEvent
from .shared_claims import SharedClaims
from .trio_pg import TrioConnection
from .workerstate import DB_RETRY_SECONDS, ClaimedTask, Held, WorkerDb, WorkerState

log = logging.getLogger("zart.worker")

# How long a claim may hold the baton; it expires by itself if its holder dies holding it.
_BATON_SECONDS = 2.0
# How soon a claimer looks again at a limited queue that another claimer was admitting into.
_CONTENDED_RETRY_SECONDS = 0.005
# How soon a claimer that found due tasks all locked by another transaction looks again, at first
# (doubling up to a second).
_LOCKED_FIRST_RETRY = 0.01


class Claimer:
    """The claim loop of one worker.

    `run_task` is what runs a claimed task (the runner's): the claimer only decides when to claim,
    how many, and keeps the held-task table in step with what it claimed.
    """

    def __init__(
        self,
        state: WorkerState,
        db: WorkerDb,
        run_task: Callable[[Held], Awaitable[None]],
        *,
        concurrency: int,
        batch: int,
        lease: float,
        poll_interval: float,
        lookahead: float,
        shared: SharedClaims | None = None,
        rank: int = 0,
        connection: TrioConnection | None = None,
    ) -> None:
        self._state = state
        self._db = db
        self._run_task = run_task
        self._concurrency = concurrency
        self._batch = batch
        self._lease = lease
        self._poll_interval = poll_interval
        # Timers due within this are claimed ahead: their runners wait for the moment (zart.runner).
        self._lookahead = lookahead
        # Shared by the workers of one supervisor; None outside a supervisor. `rank`: this worker's
        # place among them (the primaries come first).
        self._shared = shared
        self._rank = rank
        # The claim's statement goes through this connection from the trio loop when given (no
        # thread hop: a start's wake-up, most claims, reads nothing else); else through the pool.
        self._connection = connection
        # The database's clock on trio's, for timers claimed ahead (read through `connection`).
        self._clock = DbClock()
        # The back-off while due tasks are locked by others (see _run), 0 otherwise.
        self._locked_backoff = 0.0

    async def run(self, nursery: trio.Nursery) -> None:
        """Claim until a drain begins; each claimed task's runner starts in `nursery`."""
        try:
            await self._run(nursery)
        finally:
            if self._shared is not None:
                self._shared.publish(self._rank, 0)  # a worker that no longer claims has no room
            if self._connection is not None:
                self._connection.close()

    async def _run(self, nursery: trio.Nursery) -> None:
        state = self._state
        failing = False
        while not state.draining:
            state.went_round("claim_loop")
            state.wake = trio.Event()
            free = self._concurrency - len(state.held)
            wait = self._poll_interval
            if self._shared is not None:
                self._shared.publish(self._rank, free)
                if free == 0 and not self._shared.primary_has_room():
                    # Woken while full (a notification, a poll): work may be waiting that no
                    # primary can take. A spare with room looks (spares do not listen).
                    self._shared.hand_over(self._rank)
            if free > 0 and self._take_baton():
                limit = min(free, self._batch)
                state.claim_queries += 1
                held = list(state.held)
                in_doubt, state.in_doubt = state.in_doubt, False
                began = trio.current_time()
                try:
                    if self._connection is not None and not in_doubt:
                        tasks, next_due, answered = await self._claim_natively(self._connection, limit)
                    else:
                        tasks, next_due, answered = await self._db.run(self._claim, limit, held, in_doubt)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # The claim's COMMIT may have landed with its answer lost: tasks may now be
                    # claimed in our name that we do not hold. The next claim hands them back.
                    state.in_doubt = True
                    if self._shared is not None:
                        self._shared.publish(self._rank, 0)  # no room to offer while claims fail
                    if not failing:
                        log_event(log, "claim.failing", logging.WARNING, worker=state.worker_id, error=exc)
                        failing = True
                    await trio.sleep(DB_RETRY_SECONDS)
                    continue
                finally:
                    self._drop_baton()
                if failing:
                    log_event(log, "claim.recovered", worker=state.worker_id)
                    failing = False
                # When the claim's answer arrived, on trio's clock, before the histories were read:
                # the times left it returns (a deadline, a timer's moment) count from then, never
                # early (sql.CLAIM_TASKS). Counted from after the reads and the thread's hand-back,
                # as they were, every timer claimed ahead came due milliseconds late under load.
                claimed_at = answered + (trio.current_time() - time.perf_counter())
                for task in tasks:
                    entry = state.held[task.id] = Held(
                        task, trio.CancelScope(), claimed_at, self._due_at(task, claimed_at)
                    )
                    nursery.start_soon(self._run_task, entry)
                if worker_metrics.enabled:
                    worker_metrics.record_claim(len(tasks), trio.current_time() - began)
                    worker_metrics.set_in_flight(len(state.held))
                if self._shared is not None:
                    # Before any hand-over below: a sibling it wakes must see that we are full.
                    self._shared.publish(self._rank, self._concurrency - len(state.held))
                if len(tasks) == limit:
                    free = self._concurrency - len(state.held)
                    if free > 0 and not self._roomier_sibling(free):
                        continue  # there may be more ready right now
                    if self._shared is not None:
                        # More may be ready, and we are full or a primary has a batch more room:
                        # the roomiest worker claims next (spread over the CPUs, not first come).
                        self._shared.hand_over(self._rank)
                if next_due == ASK_AFTER_START:
                    try:
                        next_due = await self._read_next_due()
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        next_due = DB_RETRY_SECONDS  # the next claim finds out more
                if next_due is not None and next_due <= 0 and not tasks:
                    # Due, yet the claim took nothing: the due rows are locked by another
                    # transaction (a claim under way elsewhere, or a stuck one: a SIGSTOPped
                    # worker's, until the server ends it), which SKIP LOCKED passes over. Look again
                    # after a back-off rather than at once, over and over.
                    self._locked_backoff = min(max(2 * self._locked_backoff, _LOCKED_FIRST_RETRY), 1.0)
                    next_due = self._locked_backoff
                else:
                    self._locked_backoff = 0.0
                if next_due is not None:
                    wait = min(wait, max(next_due, 0.0))
            with trio.move_on_after(wait):
                await state.wake.wait()

    def _due_at(self, task: ClaimedTask, claimed_at: float) -> float | None:
        """When a timer claimed ahead comes due, on trio's clock (None: due now). Both bounds are
        never early: counted from the claim's answer, or placed by the database clock's reading
        (zart.dbclock), which is tighter unless the reading is old or was slow; the earlier wins."""
        if task.seconds_to_due <= 0:
            return None
        due = claimed_at + task.seconds_to_due
        if task.due_epoch is not None:
            now = trio.current_time()
            placed = self._clock.to_trio(task.due_epoch, now, time.time() - now)
            if placed is not None:
                due = min(due, placed)
        return due

    async def _read_clock(self, connection: TrioConnection) -> None:
        """Read the database's clock (zart.dbclock) through the claim's connection."""
        sent = trio.current_time()
        (reading,) = (await connection.query(sql.DATABASE_CLOCK, {}))[0]
        assert reading is not None
        answered = trio.current_time()
        self._clock.read(sent, float(reading), answered, time.time() - answered)

    async def _claim_natively(
        self, connection: TrioConnection, limit: int
    ) -> tuple[list[ClaimedTask], float | None, float]:
        """`_claim` without the hand-back of stranded tasks, the statement sent from the trio loop;
        the reads it may need (histories, events, when to look again) still go through a thread."""
        now = trio.current_time()
        if self._clock.stale(now, time.time() - now):
            await self._read_clock(connection)
        params = {
            "limit": str(limit),
            "lease": repr(self._lease),
            "worker": self._state.worker_id,
            "lookahead": repr(self._lookahead),
        }
        raw = await connection.query(sql.CLAIM_TASKS, params)
        answered = time.perf_counter()  # before the rows are read: times left count from here
        rows = [_claim_row(row) for row in raw]
        if needs_reads(rows):
            tasks, next_due = await self._db.run(load_claimed, rows, limit, self._lookahead)
        else:
            tasks, next_due = load_claimed(None, rows, limit, self._lookahead)
        return tasks, next_due, answered

    async def _read_next_due(self) -> float | None:
        """Seconds until the claimer should look again when nothing is ready (None: only a wake-up),
        asked through the claim's own connection when it has one."""
        params = {"lookahead": self._lookahead}
        if self._connection is None:
            return await self._db.run(
                lambda conn: conn.execute(sql.SECONDS_TO_NEXT_RUN_AT, params).fetchone()[0]
            )
        (found,) = (
            await self._connection.query(sql.SECONDS_TO_NEXT_RUN_AT, {"lookahead": repr(self._lookahead)})
        )[0]
        return None if found is None else float(found)

    def _roomier_sibling(self, free: int) -> bool:
        """Whether this primary should leave the next claim to a sibling primary with a batch more
        free slots (never for a worker beyond the primaries, nor outside a supervisor)."""
        shared = self._shared
        return (
            shared is not None
            and shared.is_primary(self._rank)
            and shared.roomier_primary(self._rank, free, self._batch)
        )

    def _take_baton(self) -> bool:
        """True if this worker should run the claim now (always, outside a supervisor)."""
        shared = self._shared
        if shared is None:
            return True
        if not shared.is_primary(self._rank) and shared.primary_has_room():
            # A primary claims it; we take only what they have no room for. Wake the roomiest
            # primary: it may have declined this work while we held the baton, and its freed
            # slots wake its claim loop only once (when it stops being full).
            shared.hand_over(self._rank)
            return False
        baton = shared.baton
        now = time.time()
        if baton.value > now:
            # A sibling is claiming: it goes on while its claims come back full and it has room,
            # and hands over when it fills up (or, a spare, when a primary has room again).
            return False
        baton.value = now + _BATON_SECONDS  # expires by itself if we die holding it
        return True

    def _drop_baton(self) -> None:
        if self._shared is not None:
            self._shared.baton.value = 0.0

    def _claim(
        self, conn: psycopg.Connection, limit: int, held: list[int], in_doubt: bool
    ) -> tuple[list[ClaimedTask], float | None, float]:
        """Claim up to `limit` tasks (after handing back stranded ones if `in_doubt`) and load them;
        also when (`time.perf_counter()`) the claim's answer arrived.

        Runs in a thread: the in-doubt flag is read and set by the claim loop only, in the trio
        thread; a failure anywhere in here (the claim committed, its answer or the loads lost)
        makes the claim loop set it again.
        """
        worker_id = self._state.worker_id
        claim = {"limit": limit, "lease": self._lease, "worker": worker_id, "lookahead": self._lookahead}
        if in_doubt:
            with conn.transaction():
                stranded = conn.execute(
                    sql.RELEASE_STRANDED, {"worker": worker_id, "lease": self._lease, "held": held}
                ).fetchall()
                if stranded:
                    log_event(log, "claim.recovered_stranded", worker=worker_id, tasks=len(stranded))
                rows = conn.execute(sql.CLAIM_TASKS, claim).fetchall()
        else:  # one statement is a transaction by itself: no BEGIN and COMMIT round trips
            rows = conn.execute(sql.CLAIM_TASKS, claim).fetchall()
        answered = time.perf_counter()
        return (*load_claimed(conn, rows, limit, self._lookahead), answered)


# `load_claimed`'s answer when the claim loop should read the next due time itself, after starting
# the runners of what it claimed (an idle start's wake-up saves the statement's round trip).
ASK_AFTER_START = -1.0


# How each column of sql.CLAIM_TASKS's answer is read from its text (the native claim's rows).
def _bool(text: bytes) -> bool:
    return text == b"t"


def _text(text: bytes) -> str:
    return text.decode()


_CLAIM_COLUMNS: tuple[Callable[[bytes], Any], ...] = (
    int,  # id
    int,  # claims
    _text,  # execution_id
    _text,  # kind
    _text,  # workflow
    _text,  # status
    _text,  # input
    float,  # seconds_left
    _text,  # step_key
    _text,  # payload
    int,  # seq
    int,  # grp
    float,  # seconds_to_due
    float,  # due_epoch
    _bool,  # fresh
    _bool,  # events_waiting
    _text,  # parent_id
    _text,  # trace_context
)


def _claim_row(row: list[bytes | None]) -> tuple[Any, ...]:
    return tuple(
        None if value is None else read(value) for read, value in zip(_CLAIM_COLUMNS, row, strict=True)
    )


def _history_key(row: tuple[Any, ...]) -> tuple[str, str | None]:
    """(execution id, step key or None): the history a claimed task's runner needs."""
    return row[2], row[8] if row[3] == "step" else None


def _wanted(rows: list[tuple[Any, ...]]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The (execution, step key) pairs whose history the claimed tasks need (none for executions
    begun for the first time: `fresh`), and the workflow executions with events waiting."""
    claimed = [row for row in rows if row[0] is not None]
    return [_history_key(row) for row in claimed if not row[14]], [row[2] for row in claimed if row[15]]


def needs_reads(rows: list[tuple[Any, ...]]) -> bool:
    """Whether `load_claimed` reads anything for these rows (else it needs no connection): when
    nothing was claimed (nor contended), or a claimed task has a history or events to load."""
    if not rows:
        return True
    history_of, events_of = _wanted(rows)
    return bool(history_of or events_of)


def load_claimed(
    conn: psycopg.Connection | None, rows: list[tuple[Any, ...]], limit: int, lookahead: float
) -> tuple[list[ClaimedTask], float | None]:
    """What the claimed tasks' runners need: one execution's history for a workflow task,
    one step's checkpoint and attempts for a branch task.

    Also how soon to look again: at the earliest future `run_at` when nothing more is ready (a
    timer's `lookahead` early), in a few milliseconds when a limited queue was contended, None when
    the claim was full.
    """
    # A row of NULLs: a limited queue had executions due, but another claimer was admitting into
    # it (sql.CLAIM_TASKS). Look again soon rather than at the next notification.
    contended = any(row[0] is None for row in rows)
    rows = [row for row in rows if row[0] is not None]
    # (execution id, step key or None): the history each task's runner needs, by task id. An
    # execution never begun before (`fresh`) has none: at a start's wake-up nothing is read.
    wanted = {row[0]: _history_key(row) for row in rows}
    history_of, workflow_ids = _wanted(rows)  # workflow_ids: workflow tasks with events waiting
    scope = {"ids": [w[0] for w in history_of], "keys": [w[1] for w in history_of]}
    due = None
    history_rows: Any = ()
    attempt_rows: Any = ()
    event_rows: Any = ()
    if (not rows and not contended) or history_of or workflow_ids:
        assert conn is not None, "load_claimed reads: needs_reads() said so"
        # The reads go in one pipeline: one round trip for all of them (each its own snapshot, as
        # before: a task's history cannot change while we hold its claim).
        with conn.pipeline():
            if not rows and not contended:  # nothing was ready: when should we look again?
                conn.execute(sql.DELETE_ORPHAN_TASKS)
                due = conn.execute(sql.SECONDS_TO_NEXT_RUN_AT, {"lookahead": lookahead})
            if history_of:
                history_rows = conn.execute(sql.SELECT_HISTORY, scope)
                attempt_rows = conn.execute(sql.SELECT_OPEN_ATTEMPTS, scope)
            if workflow_ids:
                event_rows = conn.execute(sql.SELECT_PENDING_EVENTS, {"ids": workflow_ids})
    next_due: float | None
    if contended:
        next_due = _CONTENDED_RETRY_SECONDS
    elif due is not None:
        found = due.fetchone()
        next_due = found[0] if found else None
    elif len(rows) < limit:
        # Nothing more is ready, but the claimed tasks' runners should not wait for the question
        # when to look again: the claim loop asks it once they have started (`Claimer._read_next_due`).
        next_due = ASK_AFTER_START
    else:
        next_due = None
    if not rows:
        return [], next_due
    history: dict[tuple[str, str | None], list[Checkpoint]] = {}
    for execution_id, asked, key, seq, kind, status, output, error, wake_in in history_rows:
        history.setdefault((execution_id, asked), []).append(
            Checkpoint(key, seq, status, output, error, kind, wake_in)
        )
    events: dict[str, list[PendingEvent]] = {}
    for execution_id, event_id, name, payload in event_rows:
        events.setdefault(execution_id, []).append(PendingEvent(event_id, name, payload))
    attempts: dict[tuple[str, str | None], dict[str, LastAttempt]] = {}
    for execution_id, asked, key, attempt, still_open, failures, crashes in attempt_rows:
        attempts.setdefault((execution_id, asked), {})[key] = LastAttempt(
            attempt, still_open, failures, crashes
        )
    tasks = [
        ClaimedTask(
            id=task_id,
            claims=claims,
            execution_id=execution_id,
            kind=kind,
            workflow=workflow,
            status=status,
            input_json=input_json,
            seconds_to_deadline=seconds_left,
            history=history.get(wanted[task_id], []),
            last_attempts=attempts.get(wanted[task_id], {}),
            events=events.get(execution_id, []) if kind != "step" else [],
            step_key=step_key,
            payload_json=payload_json,
            seq=seq,
            group=group,
            seconds_to_due=seconds_to_due,
            due_epoch=due_epoch,
            parent_id=parent_id,
            trace_context=trace_context,
        )
        for (
            task_id,
            claims,
            execution_id,
            kind,
            workflow,
            status,
            input_json,
            seconds_left,
            step_key,
            payload_json,
            seq,
            group,
            seconds_to_due,
            due_epoch,
            _fresh,
            _events_waiting,
            parent_id,
            trace_context,
        ) in rows
    ]
    return tasks, next_due
