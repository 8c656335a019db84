"""The worker: one trio loop that claims tasks in batches and runs their executions.

Pieces, each a task in one nursery:

* the listener waits on the LISTEN connection's socket (`trio.lowlevel.wait_readable`) and sets the
  wake-up event when a task became ready somewhere;
* the claimer claims up to `batch` ready tasks at a time (`FOR UPDATE SKIP LOCKED`), loads their
  histories in the same thread hop, and starts one runner per task. When there is nothing to claim it
  sleeps until a notification, the earliest future `run_at`, or the poll interval, whichever is first;
* the runners replay and run the executions (`zart.replay`); a runner keeps its execution until the
  workflow ends, running every step inline, so a step never pays for a task round trip;
* the completer commits the runners' checkpoints in batches (`zart.completer`);
* the heartbeat extends the leases of held tasks and cancels runners whose lease was lost.

psycopg's sync API is driven from threads, one hop per whole transaction, through a CapacityLimiter
sized to the connection pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

import attrs
import orjson
import psycopg
import trio
from psycopg_pool import ConnectionPool

from . import queues, registry, sql
from .completer import CommitAbandoned, Completer, Fragment, FragmentRejected
from .db import Outage, connect, is_transient, open_pool, resolve_url
from .durations import parse_duration
from .errors import CheckpointRejected, DatabaseUnavailable, WorkerCrashed
from .logs import log_event
from .replay import (
    Checkpoint,
    ExecutionContext,
    LastAttempt,
    LeaseLost,
    PendingEvent,
    Services,
    StepCall,
    error_json,
    utcnow,
)
from .schema import ensure_migrated

log = logging.getLogger("zart.worker")
T = TypeVar("T")

# Retries through an outage start after _FIRST_RETRY_SECONDS and double up to _DB_RETRY_SECONDS:
# a short blip costs little, and however long the outage, the worker notices the database's return
# within about a second.
_FIRST_RETRY_SECONDS = 0.1
_DB_RETRY_SECONDS = 1.0
_BATON_SECONDS = 2.0
# How soon a claimer looks again at a limited queue that another claimer was admitting into.
_CONTENDED_RETRY_SECONDS = 0.005
# At stop, how long the completer keeps trying to commit what runners handed it before it gives up
# (the outcome is then unknown, which the fencing token makes safe); and how long the hand-back of
# the held tasks may wait for a connection. Together they bound a stop to the grace plus seconds.
_STOP_COMMIT_SECONDS = 3.0
_STOP_CHECKOUT_SECONDS = 3.0

TERMINAL_STATUSES = frozenset({"completed", "failed", "timed_out", "cancelled"})


@attrs.frozen
class ClaimedTask:
    id: int
    claims: int
    execution_id: str
    kind: str
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
    # A timer claimed ahead (sql.CLAIM_TASKS's lookahead): seconds from the claim to its moment.
    seconds_to_due: float = 0.0


@attrs.define
class _Held:
    task: ClaimedTask
    scope: trio.CancelScope
    claimed_at: float  # trio's clock when the claim's answer arrived
    execution: ExecutionContext | None = None  # set once the runner has built it


class Worker:
    """A worker process's engine; `run()` in the foreground, or `start()`/`stop()` in a thread.

    `concurrency` bounds the executions in flight, `batch` the tasks taken per claim, `lease` how
    long a claimed task stays with this worker without a heartbeat, `poll_interval` the fallback
    when no notification arrives, `lookahead` how early a timer that comes due may be claimed (it
    then waits in the worker, holding a slot, for its moment), `inline_fanout` the widest
    `zart.parallel`/`zart.map` whose branches run in the workflow's own worker rather than as tasks.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        concurrency: int = 100,
        batch: int = 50,
        lease: Any = "30s",
        poll_interval: Any = "5s",
        listen: bool = True,
        grace: Any = "30s",
        claim_baton: Any = None,
        supervisor_pid: int | None = None,
        max_abandoned: int | None = 3,
        lookahead: Any = "250ms",
        inline_fanout: int = 32,
    ) -> None:
        if concurrency < 1 or batch < 1:
            raise ValueError("concurrency and batch must be at least 1")
        if isinstance(inline_fanout, bool) or not isinstance(inline_fanout, int) or inline_fanout < 0:
            raise ValueError(f"inline_fanout must be a whole number >= 0, got {inline_fanout!r}")
        if max_abandoned is not None and (isinstance(max_abandoned, bool) or max_abandoned < 0):
            raise ValueError(
                f"max_abandoned must be a whole number >= 0 (0: no limit), got {max_abandoned!r}"
            )
        self.database_url = database_url
        self.concurrency = concurrency
        self.batch = batch
        self.lease = parse_duration(lease, "lease")
        self.poll_interval = parse_duration(poll_interval, "poll interval")
        self.grace = parse_duration(grace, "grace period")
        # Timers (a sleep's end, a retry's back-off) due within this are claimed ahead and wait in
        # the worker for their moment: they come due on time, not a claim's round trip late.
        self.lookahead = parse_duration(lookahead, "lookahead")
        # zart.parallel/zart.map fan-outs at most this wide run in the workflow's own worker while it
        # has room (a branch then costs what an inline step costs); wider ones become branch tasks.
        self.inline_fanout = inline_fanout
        self.listen = listen
        # The poison-pill limit (see Services.max_abandoned); 0 or None: no limit.
        self.max_abandoned = max_abandoned or None
        # Set when tasks may be claimed in this worker's name without being held (a claim whose
        # answer was lost, a runner that ended abnormally): the next claim hands them back first.
        self._in_doubt = False
        # Shared by the workers of one supervisor (a double in shared memory): "a claim is under
        # way until this time". One notification then makes one worker claim, not all of them.
        self._claim_baton = claim_baton
        self._supervisor_pid = supervisor_pid
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: dict[int, _Held] = {}
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._pool: ConnectionPool | None = None
        self._db_limiter: trio.CapacityLimiter | None = None
        self._completer: Completer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._crash: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel_scope: trio.CancelScope | None = None
        self.executions_finished = 0  # runs that ended or suspended (a retry, a sleep, a wait)
        self.claim_queries = 0  # how many claim queries this worker ran (see the claim baton)
        self._stopping = False
        self._draining = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Run in the foreground (the `zart worker` command).

        SIGTERM or SIGINT drains: no new claims, in-flight work gets up to `grace` seconds to
        finish, what is left is handed back. A second SIGINT stops at once.
        """
        trio.run(self._main, True)

    def start(self, timeout: float = 30.0) -> Worker:
        """Run in a background thread (tests, embedding); returns once the worker is claiming."""
        self._thread = threading.Thread(target=self._run_in_thread, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the worker did not start in time")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Stop the background worker: in-flight executions are handed back for another claim.

        Raises WorkerCrashed if the worker had stopped by itself on an unexpected error (it was
        logged as `worker.crashed` when it happened, and its executions were handed back).
        """
        if self._thread is None:
            return
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):  # it already ended by itself
                trio.from_thread.run_sync(self._request_stop, trio_token=self._token)
        self._thread.join()
        self._thread = None
        if self._crash is not None:
            raise WorkerCrashed(
                f"the worker stopped on an unexpected error: {self._crash!r}"
            ) from self._crash

    def _run_in_thread(self) -> None:
        """The background thread: the worker's trio loop, its crash kept for `stop()` to report."""
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._crash = exc

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _handle_signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._draining:
                    if signum == signal.SIGINT:
                        log_event(log, "worker.stop_now", worker=self.worker_id, signal=name)
                        self._request_stop()
                    continue
                nursery.start_soon(self._drain, name)

    async def _drain(self, reason: str) -> None:
        """Stop claiming; give in-flight work `grace` seconds; then stop (handing back the rest)."""
        self._draining = True
        self._wake.set()
        log_event(
            log,
            "worker.draining",
            worker=self.worker_id,
            reason=reason,
            in_flight=len(self._held),
            grace=self.grace,
        )
        if self._held:
            with trio.move_on_after(self.grace):
                await self._drained.wait()
        self._request_stop()

    def _request_stop(self) -> None:
        # Runners cancelled from here on keep their entry in _held, so that _release_held can
        # hand their tasks back. Those waiting for a commit get it, or CommitAbandoned once the
        # completer gives up: a stop never waits on a database that does not answer.
        self._stopping = True
        if self._completer is not None:
            self._completer.give_up_after(_STOP_COMMIT_SECONDS)
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _main(self, handle_signals: bool = False) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._wake = trio.Event()
        self._drained = trio.Event()
        try:
            started = await self._setup_when_reachable(handle_signals)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            if self._thread is None:
                raise
            return
        if not started:  # told to stop while waiting for the database
            log_event(log, "worker.stopped", worker=self.worker_id, handed_back=0, runs=0, claims=0)
            self._ready.set()
            return
        assert self._pool is not None
        try:
            # The completer lives in a nursery of its own, around the one of the runners: a stop
            # cancels the runners, and the completer is still there to answer the ones waiting
            # for a commit. If it dies, it answers them all (CommitAbandoned) as it goes.
            self._completer = Completer(self._pool, self._db_limiter, self.worker_id, self.lease)
            async with trio.open_nursery() as services:
                services.start_soon(self._completer.run)
                await self._run_engine(handle_signals)
                services.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                released = await self._release_held()
                await trio.to_thread.run_sync(partial(self._pool.close, timeout=_STOP_CHECKOUT_SECONDS))
            log_event(
                log,
                "worker.stopped",
                worker=self.worker_id,
                handed_back=released,
                runs=self.executions_finished,
                claims=self.claim_queries,
            )

    async def _run_engine(self, handle_signals: bool) -> None:
        """The listener, heartbeat, claimer and runners, until a stop cancels them."""
        with trio.CancelScope() as self._cancel_scope:
            if self._stopping:  # stop() came while we were connecting
                self._cancel_scope.cancel()
            async with trio.open_nursery() as nursery:
                if handle_signals:
                    nursery.start_soon(self._essential, self._handle_signals, nursery)
                if self.listen:
                    nursery.start_soon(self._essential, self._listen)
                nursery.start_soon(self._essential, self._heartbeat)
                nursery.start_soon(self._essential, self._claim_loop, nursery)
                log_event(
                    log,
                    "worker.started",
                    worker=self.worker_id,
                    pid=os.getpid(),
                    concurrency=self.concurrency,
                    batch=self.batch,
                    lease=self.lease,
                    listen=self.listen,
                )
                self._ready.set()

    async def _essential(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a piece the worker cannot do without; if it crashes, stop the whole worker.

        Never a silent zombie: the crash is logged, the runners are stopped within the bounded
        stop, and the error leaves the process (the supervisor starts a new one).
        """
        try:
            await fn(*args)
        except Exception as exc:
            log_event(
                log,
                "worker.crashed",
                logging.ERROR,
                worker=self.worker_id,
                piece=getattr(fn, "__name__", repr(fn)).lstrip("_"),
                error=f"{type(exc).__name__}: {exc}",
            )
            self._request_stop()
            raise

    async def _setup_when_reachable(self, handle_signals: bool) -> bool:
        """`_setup`, retried while the database cannot be reached; False if stopped meanwhile.

        A worker started (or restarted by its supervisor) during an outage waits for the database
        instead of exiting: an exit would only be a crash to count, and the work resumes sooner
        when the worker is already there. A configuration error (unknown database or role, failed
        authentication, a malformed URL) is raised at once. SIGTERM/SIGINT (`run()`) and `stop()`
        end the wait.
        """
        outage = Outage(log, _DB_RETRY_SECONDS, worker=self.worker_id)
        with contextlib.ExitStack() as stack:
            signals = None
            if handle_signals:
                signals = stack.enter_context(trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
            with trio.CancelScope() as self._cancel_scope:
                if self._stopping:  # stop() came before we got here
                    self._cancel_scope.cancel()
                while True:
                    try:
                        await trio.to_thread.run_sync(self._setup)
                    except Exception as exc:
                        delay = outage.failed(exc)
                    else:
                        break
                    with trio.move_on_after(delay):
                        if signals is not None:
                            async for signum in signals:
                                log_event(
                                    log,
                                    "worker.draining",
                                    worker=self.worker_id,
                                    reason=signal.Signals(signum).name,
                                    in_flight=0,
                                    grace=self.grace,
                                )
                                return False
                        await trio.sleep_forever()
            self._cancel_scope = None
        if self._pool is None:  # stop() cancelled the wait
            return False
        outage.ended()
        return True

    def _setup(self) -> None:
        """Migrate, open the pool, register: all or nothing, so that a failed attempt (the database
        went away half-way) leaves no pool behind and the next attempt starts clean."""
        url = resolve_url(self.database_url)
        self.database_url = url
        ensure_migrated(url)
        # The claimer, the completer and the heartbeat each use one connection at a time, plus one
        # spare: 4 per process (and its listener), so that `--procs 16` holds at most 80 of a
        # server's default 100 connections.
        size = 4
        pool = open_pool(url, min_size=1, max_size=size, name="zart-worker", keep_reconnecting=True)
        try:
            with pool.connection() as conn:
                conn.execute(
                    sql.REGISTER_WORKER,
                    {
                        "id": self.worker_id,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "supervisor_pid": self._supervisor_pid,
                        "concurrency": self.concurrency,
                    },
                )
                conn.execute(sql.FORGET_DEAD_WORKERS)
            workflows = registry.workflows()
            if workflows:
                with pool.connection() as conn:
                    conn.execute(
                        sql.REGISTER_WORKFLOWS,
                        {
                            "names": [w.name for w in workflows],
                            "timeouts": [w.timeout for w in workflows],
                            "queues": [w.queue for w in workflows],
                        },
                    )
            self._register_queues(pool)
        except BaseException:
            pool.close()
            raise
        self._db_limiter = trio.CapacityLimiter(size)
        self._step_limiter = trio.CapacityLimiter(self.concurrency)
        self._pool = pool

    @staticmethod
    def _register_queues(pool: ConnectionPool) -> None:
        """The queues this process declares (with their limits) and the ones its workflows only name."""
        declared = queues.declared_queues()
        named = sorted({w.queue for w in registry.workflows() if w.queue} - {q.name for q in declared})
        with pool.connection() as conn:
            if declared:
                conn.execute(sql.REGISTER_QUEUES, queues.registration(declared))
            if named:
                conn.execute(sql.DECLARE_QUEUES, queues.registration_without_limits(named))

    async def _db_quietly(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """`_db`, but a database error is logged, not raised (shutdown paths)."""
        try:
            return await self._db(fn, *args, timeout=timeout)
        except (psycopg.Error, OSError) as exc:
            log_event(log, "worker.db_error", logging.WARNING, worker=self.worker_id, error=exc)
            return None

    async def _db(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run `fn(conn, *args)` on a pooled connection in a thread: one hop per transaction.

        `timeout` bounds the wait for a connection (the pool's own default is 30 s).
        """
        assert self._pool is not None
        pool = self._pool

        def call() -> T:
            with pool.connection(timeout=timeout) as conn:
                return fn(conn, *args)

        return await trio.to_thread.run_sync(call, limiter=self._db_limiter)

    # -- wake-ups ---------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Set the wake-up event whenever a NOTIFY arrives; reconnect if the connection drops.

        Reconnection retries every failure to reach the database (a lost connection, a refused or
        failed connect: `DatabaseUnavailable`) for as long as the outage lasts, with a back-off
        capped at `_DB_RETRY_SECONDS`, so the worker hears notifications again within about a
        second of the database's return. A configuration error (the database or role gone, the
        password changed) is not an outage: it ends the worker.
        """
        lost = False
        delay = _FIRST_RETRY_SECONDS
        while True:
            conn: psycopg.Connection | None = None
            try:
                conn = await trio.to_thread.run_sync(partial(connect, self.database_url))
                conn.execute(f"LISTEN {sql.TASKS_CHANNEL}")
                if lost:
                    log_event(log, "listen.reconnected", worker=self.worker_id)
                    lost, delay = False, _FIRST_RETRY_SECONDS
                self._wake.set()  # anything that happened while we were not listening
                while True:
                    await trio.lowlevel.wait_readable(conn.fileno())
                    conn.pgconn.consume_input()
                    got = False
                    while conn.pgconn.notifies() is not None:
                        got = True
                    if got:
                        self._wake.set()
            except (psycopg.Error, OSError, DatabaseUnavailable) as exc:
                if not lost:
                    log_event(log, "listen.lost", logging.WARNING, worker=self.worker_id, error=exc)
                    lost = True
                await trio.sleep(delay)
                delay = min(delay * 2, _DB_RETRY_SECONDS)
            finally:
                if conn is not None:
                    conn.close()

    # -- claiming ---------------------------------------------------------------------------------

    async def _claim_loop(self, nursery: trio.Nursery) -> None:
        failing = False
        while not self._draining:
            self._wake = trio.Event()
            free = self.concurrency - len(self._held)
            wait = self.poll_interval
            if free > 0 and self._take_baton():
                limit = min(free, self.batch)
                self.claim_queries += 1
                held = list(self._held)
                in_doubt, self._in_doubt = self._in_doubt, False
                try:
                    tasks, next_due = await self._db(self._claim, limit, held, in_doubt)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # The claim's COMMIT may have landed with its answer lost: tasks may now be
                    # claimed in our name that we do not hold. The next claim hands them back.
                    self._in_doubt = True
                    if not failing:
                        log_event(log, "claim.failing", logging.WARNING, worker=self.worker_id, error=exc)
                        failing = True
                    await trio.sleep(_DB_RETRY_SECONDS)
                    continue
                finally:
                    self._drop_baton()
                if failing:
                    log_event(log, "claim.recovered", worker=self.worker_id)
                    failing = False
                claimed_at = trio.current_time()
                for task in tasks:
                    entry = self._held[task.id] = _Held(task, trio.CancelScope(), claimed_at)
                    nursery.start_soon(self._run_task, entry)
                if len(tasks) == limit:
                    if len(self._held) < self.concurrency:
                        continue  # there may be more ready right now
                    if self._claim_baton is not None:
                        # We are full and more may be ready: hand over to the next idle worker.
                        await self._db_quietly(lambda conn: conn.execute(sql.NOTIFY_TASKS))
                if next_due is not None:
                    wait = min(wait, max(next_due, 0.0))
            with trio.move_on_after(wait):
                await self._wake.wait()

    def _take_baton(self) -> bool:
        """True if this worker should run the claim now (always, outside a supervisor)."""
        baton = self._claim_baton
        if baton is None:
            return True
        now = time.time()
        if baton.value > now:
            return False  # a sibling is claiming; it hands over if it fills up
        baton.value = now + _BATON_SECONDS  # expires by itself if we die holding it
        return True

    def _drop_baton(self) -> None:
        if self._claim_baton is not None:
            self._claim_baton.value = 0.0

    def _claim(
        self, conn: psycopg.Connection, limit: int, held: list[int], in_doubt: bool
    ) -> tuple[list[ClaimedTask], float | None]:
        """Claim up to `limit` tasks (after handing back stranded ones if `in_doubt`) and load them.

        Runs in a thread: the in-doubt flag is read and set by the claim loop only, in the trio
        thread; a failure anywhere in here (the claim committed, its answer or the loads lost)
        makes the claim loop set it again.
        """
        with conn.transaction():
            if in_doubt:
                stranded = conn.execute(
                    sql.RELEASE_STRANDED, {"worker": self.worker_id, "lease": self.lease, "held": held}
                ).fetchall()
                if stranded:
                    log_event(log, "claim.recovered_stranded", worker=self.worker_id, tasks=len(stranded))
            rows = conn.execute(
                sql.CLAIM_TASKS,
                {"limit": limit, "lease": self.lease, "worker": self.worker_id, "lookahead": self.lookahead},
            ).fetchall()
        return self._load_claimed(conn, rows, limit)

    def _load_claimed(
        self, conn: psycopg.Connection, rows: list[tuple[Any, ...]], limit: int
    ) -> tuple[list[ClaimedTask], float | None]:
        """What the claimed tasks' runners need: one execution's history for a workflow task,
        one step's checkpoint and attempts for a branch task."""
        # A row of NULLs: a limited queue had executions due, but another claimer was admitting into
        # it (sql.CLAIM_TASKS). Look again soon rather than at the next notification.
        contended = any(row[0] is None for row in rows)
        rows = [row for row in rows if row[0] is not None]
        if contended:
            next_due: float | None = _CONTENDED_RETRY_SECONDS
        elif len(rows) < limit:  # nothing more is ready: when should we look again?
            if not rows:
                conn.execute(sql.DELETE_ORPHAN_TASKS)
            due = conn.execute(sql.SECONDS_TO_NEXT_RUN_AT, {"lookahead": self.lookahead}).fetchone()
            next_due = due[0] if due else None
        else:
            next_due = None
        if not rows:
            return [], next_due
        # (execution id, step key or None): the history each task's runner needs, by task id.
        wanted = {row[0]: (row[2], row[8] if row[3] == "step" else None) for row in rows}
        scope = {"ids": [w[0] for w in wanted.values()], "keys": [w[1] for w in wanted.values()]}
        history: dict[tuple[str, str | None], list[Checkpoint]] = {}
        for execution_id, asked, key, seq, kind, status, output, error, wake_in in conn.execute(
            sql.SELECT_HISTORY, scope
        ):
            history.setdefault((execution_id, asked), []).append(
                Checkpoint(key, seq, status, output, error, kind, wake_in)
            )
        workflow_ids = [row[2] for row in rows if row[3] != "step"]
        events: dict[str, list[PendingEvent]] = {}
        if workflow_ids:
            for execution_id, event_id, name, payload in conn.execute(
                sql.SELECT_PENDING_EVENTS, {"ids": workflow_ids}
            ):
                events.setdefault(execution_id, []).append(PendingEvent(event_id, name, payload))
        attempts: dict[tuple[str, str | None], dict[str, LastAttempt]] = {}
        for execution_id, asked, key, attempt, still_open, failures, crashes in conn.execute(
            sql.SELECT_OPEN_ATTEMPTS, scope
        ):
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
            ) in rows
        ]
        return tasks, next_due

    # -- running ----------------------------------------------------------------------------------

    async def _run_task(self, entry: _Held) -> None:
        """Run one claimed task; whatever happens to it, the worker and its other tasks go on."""
        task = entry.task
        was_full = len(self._held) >= self.concurrency
        try:
            with entry.scope:
                if task.seconds_to_due > 0:  # a timer claimed ahead: its moment has not come yet
                    await trio.sleep_until(entry.claimed_at + task.seconds_to_due)
                await self._run_execution(entry)
        except LeaseLost:
            log_event(log, "lease.lost", logging.WARNING, worker=self.worker_id, execution=task.execution_id)
        except FragmentRejected as exc:
            # PostgreSQL refused this execution's own writes (its batch-mates were committed):
            # it fails alone, with an error that says so.
            await self._fail_alone(
                task, CheckpointRejected(f"PostgreSQL refused to store its progress: {exc}")
            )
        except CommitAbandoned as exc:
            self._interrupted(task, exc)
        except Exception as exc:
            if not is_transient(exc):
                # Not the database, not the workflow's code (its errors are recorded by the
                # replay): a fault of the engine with this one execution. Fail it, keep the rest.
                log.exception("execution %s crashed its runner", task.execution_id)
                await self._fail_alone(task, exc)
            else:
                self._interrupted(task, exc)
        finally:
            # Only our own entry: a lapsed task re-claimed by this same worker has a new one.
            if not self._stopping and self._held.get(task.id) is entry:
                del self._held[task.id]
            if was_full:
                self._wake.set()
            if self._draining and not self._held:
                self._drained.set()

    def _interrupted(self, task: ClaimedTask, error: BaseException) -> None:
        """A runner ended without knowing what is durable: its task may still be claimed by us."""
        log_event(
            log,
            "execution.interrupted",
            logging.WARNING,
            worker=self.worker_id,
            execution=task.execution_id,
            error=error,
        )
        if not self._stopping:  # at a stop, _release_held hands it back
            self._in_doubt = True
            self._wake.set()

    async def _fail_alone(self, task: ClaimedTask, error: BaseException) -> None:
        """End one execution `failed` with `error`, in a fragment of the engine's own text only."""
        assert self._completer is not None
        message = "the execution failed in the engine; see its error"
        fragment = Fragment(
            task.execution_id,
            task.id,
            task.claims,
            execution=("failed", None, error_json(error), None, utcnow()),
            finish_execution=True,
            close_attempts=("abandoned", type(error).__name__, message),
        )
        log_event(
            log,
            "execution.failed_alone",
            logging.ERROR,
            worker=self.worker_id,
            execution=task.execution_id,
            error=f"{type(error).__name__}: {error}",
        )
        try:
            with trio.CancelScope(shield=True):
                await self._completer.commit(fragment)
        except (FragmentRejected, CommitAbandoned) as exc:
            self._interrupted(task, exc)

    async def _run_execution(self, entry: _Held) -> None:
        task = entry.task
        assert self._completer is not None
        if task.status in TERMINAL_STATUSES:
            await self._completer.commit(Fragment(task.execution_id, task.id, task.claims, finish_task=True))
            return
        workflow = registry.get_workflow(task.workflow)
        branch = None
        if task.kind == "step":
            assert task.payload_json is not None
            branch = orjson.loads(task.payload_json)
            step = registry.get_step(branch["step"])
            missing = None if step is not None else f"step {branch['step']!r}"
        else:
            missing = None if workflow is not None else f"workflow {task.workflow!r}"
        if missing is not None:
            log.warning(
                "execution %s needs %s, which this worker does not have; handing it back",
                task.execution_id,
                missing,
            )
            await self._completer.commit(
                Fragment(task.execution_id, task.id, task.claims, release_after=self.poll_interval)
            )
            return
        execution = ExecutionContext(
            execution_id=task.execution_id,
            workflow_name=task.workflow,
            workflow=workflow,
            task_id=task.id,
            claims=task.claims,
            history=task.history,
            last_attempts=task.last_attempts,
            services=Services(
                self._completer,
                self._step_limiter,
                self.worker_id,
                self._wake_claimer,
                self.max_abandoned,
                inline_fanout=self.inline_fanout,
                may_inline=self._has_room,
            ),
            status=task.status,
            events=task.events,
            deadline=None
            if task.seconds_to_deadline is None
            else entry.claimed_at + task.seconds_to_deadline,
            claimed_at=entry.claimed_at,
        )
        entry.execution = execution
        if branch is not None:
            assert task.step_key is not None and task.seq is not None and task.group is not None
            call = StepCall(execution, step, task.step_key, tuple(branch["args"]), branch["kwargs"])
            await execution.run_branch(call, task.seq, task.group)
            return
        await execution.run(task.input_json)
        self.executions_finished += 1

    def _has_room(self) -> bool:
        """Whether a workflow's branches may run here: not while this worker is full (its branches
        then go to tasks, and the workflow gives its slot back while they run)."""
        return len(self._held) < self.concurrency

    def _wake_claimer(self) -> None:
        """An execution was rescheduled: re-read the earliest run_at so its timer is not missed."""
        self._wake.set()

    # -- leases -----------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Every lease/3: renew held leases and this worker's row; cancel what was taken over.

        A task also drops out of the renewal when its execution finished or was handed back while
        the renewal ran, so a task counts as lost only when two renewals in a row miss it.
        """
        suspects: set[int] = set()
        while True:
            await trio.sleep(self.lease / 3)
            orphaned = self._supervisor_pid is not None and os.getppid() != self._supervisor_pid
            if orphaned and not self._draining:  # the supervisor died: finish up and exit
                trio.lowlevel.spawn_system_task(self._drain, "supervisor gone")
            held = list(self._held.values())
            try:
                kept = await self._db(self._beat, [h.task for h in held])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log_event(log, "heartbeat.failed", logging.WARNING, worker=self.worker_id, error=exc)
                continue
            missed = {entry.task.id for entry in held if entry.task.id not in kept}
            for entry in held:
                task_id = entry.task.id
                if task_id in missed and task_id in suspects and self._held.get(task_id) is entry:
                    log_event(
                        log,
                        "lease.lost",
                        logging.WARNING,
                        worker=self.worker_id,
                        execution=entry.task.execution_id,
                    )
                    entry.scope.cancel()
            suspects = missed

    def _beat(self, conn: psycopg.Connection, tasks: list[ClaimedTask]) -> set[int]:
        conn.execute(sql.WORKER_HEARTBEAT, {"id": self.worker_id})
        return self._extend(conn, tasks) if tasks else set()

    def _extend(self, conn: psycopg.Connection, tasks: Iterable[ClaimedTask]) -> set[int]:
        tasks = sorted(tasks, key=lambda t: t.id)
        rows = conn.execute(
            sql.EXTEND_LEASES,
            {
                "lease": self.lease,
                "ids": [t.id for t in tasks],
                "claims": [t.claims for t in tasks],
                "worker": self.worker_id,
            },
        ).fetchall()
        return {row[0] for row in rows}

    async def _release_held(self) -> int:
        """Hand in-flight tasks back at shutdown so another worker resumes them at once, and
        remove this worker's row: one transaction, one wait for a connection at most.

        Only tasks still claimed by this worker are touched (RELEASE_TASKS): one the completer
        parked or finished meanwhile keeps what it committed. The attempts cut short are closed as
        `WorkerStopped`, which the poison-pill limit does not count.
        """
        entries = list(self._held.values())
        self._held.clear()
        if self._pool is None:
            return 0
        held = [entry.task for entry in entries]
        cut_short = [
            (entry.task.execution_id, key, attempt)
            for entry in entries
            if entry.execution is not None
            for key, attempt in entry.execution.in_flight.items()
        ]

        def release(conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.execute(sql.UNREGISTER_WORKER, {"id": self.worker_id})
                if not held:
                    return
                conn.execute(
                    sql.RELEASE_TASKS,
                    {
                        "ids": [t.id for t in held],
                        "claims": [t.claims for t in held],
                        "delays": [0.0] * len(held),
                        "events": [None] * len(held),
                        "branches": [False] * len(held),
                        "worker": self.worker_id,
                    },
                )
                if cut_short:
                    conn.execute(
                        sql.STOP_ATTEMPTS,
                        {
                            "execution_ids": [row[0] for row in cut_short],
                            "step_keys": [row[1] for row in cut_short],
                            "attempts": [row[2] for row in cut_short],
                            "worker": self.worker_id,
                        },
                    )
                conn.execute(sql.NOTIFY_TASKS)

        await self._db_quietly(release, timeout=_STOP_CHECKOUT_SECONDS)
        return len(held)
