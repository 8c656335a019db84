"""The worker: one trio loop that claims tasks in batches and runs their executions.

`Worker` is the process's engine as its users see it (start, stop, run in the foreground, drain on
a signal), and the one place that puts the pieces together. Each piece has one job and a module of
its own; they run as tasks in one nursery, and share a `WorkerState` (`zart.workerstate`) rather
than calling each other:

* the listener (`zart.listener`) sets the claimer's wake-up event when a task became ready somewhere;
* the claimer (`zart.claimer`) claims up to `batch` ready tasks at a time, loads their histories in
  the same thread hop, and starts one runner per task;
* the runners (`zart.runner`) replay and run the executions (`zart.replay`); a runner keeps its
  execution until the workflow ends, running every step inline, so a step never pays for a task
  round trip;
* the completer commits the runners' checkpoints in batches (`zart.completer`);
* the scheduler (`zart.scheduler`) sleeps until a schedule's next firing and starts it, once across
  all workers (off the claim's path: it only starts executions, as a client would);
* the heartbeat (`zart.leases`) extends the leases of held tasks and cancels runners whose lease was
  lost; at a stop, the held tasks are handed back.

psycopg's sync API is driven from threads, one hop per whole transaction, through a CapacityLimiter
sized to the connection pool (`zart.workerstate.WorkerDb`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from psycopg_pool import ConnectionPool

from . import queues, registry, sql
from .claimer import Claimer
from .completer import Completer
from .db import Outage, is_transient, open_pool, resolve_url, with_session_settings
from .durations import parse_duration
from .errors import WorkerCrashed
from .leases import Leases
from .listener import Listener
from .logs import log_event
from .replay import ChildRun, Services
from .runner import Runner
from .scheduler import Scheduler, declared_entries, register
from .schema import ensure_migrated
from .shared_claims import SharedClaims
from .transactional import TransactionRunner
from .trio_pg import TrioConnection
from .wake_routing import WakeRouter, read_live_groups
from .watchdog import Liveness, resolve_limit, watch_self
from .workerstate import DB_RETRY_SECONDS, WorkerDb, WorkerState, unwatched

log = logging.getLogger("zart.worker")

# The worker's pool, shared by the claimer, the heartbeat and the completer's batches. They each use
# one connection at a time, plus one spare: 4 per process (and its listener), so that `--procs 16`
# holds at most 80 of a server's default 100 connections.
_POOL_SIZE = 4
# Connections for transactional steps (zart.transactional), and how many of their bodies run at once.
_TRANSACTION_POOL_SIZE = 8
# At stop, how long the completer keeps trying to commit what runners handed it before it gives up
# (the outcome is then unknown, which the fencing token makes safe); and how long the hand-back of
# the held tasks may wait for a connection. Together they bound a stop to the grace plus seconds.
_STOP_COMMIT_SECONDS = 3.0
_STOP_CHECKOUT_SECONDS = 3.0


# Young-generation collections after this many net allocations (Python's default: 700), and the
# older generations as by default relative to it.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Set the garbage collector for a process that is a worker and nothing else.

    A worker holding thousands of executions holds hundreds of thousands of objects, and Python's
    cyclic collector stops the event loop to scan them: a full collection took tens of
    milliseconds, and every timer due meanwhile came due that late (`bench.wakeups` with the CPU
    saturated: p99 lateness 41-46 ms, 12-16 ms with this). `gc.freeze()` moves what exists once the
    apps are imported (modules, functions, the registry) out of every later scan, and young
    collections run every 50,000 net allocations instead of 700: Zart's per-step objects are freed
    by reference counting, and the cycles some leave (exceptions with their tracebacks) wait a
    little longer. Not for `start()`: a worker in a thread of the user's process leaves that
    process's collector alone.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Worker:
    """A worker process's engine; `run()` in the foreground, or `start()`/`stop()` in a thread.

    `concurrency` bounds the executions in flight, `batch` the tasks taken per claim, `lease` how
    long a claimed task stays with this worker without a heartbeat, `poll_interval` the fallback
    when no notification arrives, `lookahead` how early a timer that comes due may be claimed (it
    then waits in the worker, holding a slot, for its moment), `inline_fanout` the widest
    `zart.parallel`/`zart.map` whose branches run in the workflow's own worker rather than as tasks.
    `watchdog` (zart.watchdog): under `run()` without a supervisor, the process kills itself when
    its heartbeat or claim loop has not gone round for that long (None: the default limit, 0: off);
    a worker started in a thread (`start()`) never does.
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
        claims: SharedClaims | None = None,
        claim_rank: int = 0,
        liveness: Liveness | None = None,
        supervisor_pid: int | None = None,
        max_abandoned: int | None = 3,
        lookahead: Any = "250ms",
        inline_fanout: int = 32,
        group: str | None = None,
        watchdog: Any = None,
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
        # zart.parallel/zart.map fan-outs at most this wide run in the workflow's own worker (a branch
        # then costs about what an inline step costs); wider ones become branch tasks.
        self.inline_fanout = inline_fanout
        self.listen = listen
        # The poison-pill limit (see Services.max_abandoned); 0 or None: no limit.
        self.max_abandoned = max_abandoned or None
        # Shared by the workers of one supervisor (zart.shared_claims): the claim baton, so that
        # one notification makes one worker claim, every worker's free slots and wake-up pipe;
        # `claim_rank` is this worker's place among them (its supervisor slot).
        self._claims = claims
        self._claim_rank = claim_rank
        # The watchdog (zart.watchdog): this worker's loops mark their rounds there, for its
        # supervisor to read or, without one, for a thread of its own process once `run()` starts.
        self._liveness = liveness
        self._watch_slot = claim_rank
        self._own_watchdog = (
            None if liveness is not None else resolve_limit(watchdog, self.lease, self.poll_interval)
        )
        self._supervisor_pid = supervisor_pid
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._state = WorkerState(self.worker_id)
        if liveness is not None:
            self._state.went_round = partial(liveness.went_round, self._watch_slot)
        # The group whose workers share notifications as one (zart.wake_routing): the supervisor's
        # name, or this worker alone.
        self.group = group or self.worker_id
        self._pool: ConnectionPool | None = None
        # The database URL of the engine's own connections (set by _setup: see there).
        self._engine_url = ""
        self._transactions: TransactionRunner | None = None
        self._completer: Completer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._crash: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel_scope: trio.CancelScope | None = None

    @property
    def executions_finished(self) -> int:
        """Runs that ended or suspended (a retry, a sleep, a wait)."""
        return self._state.executions_finished

    @property
    def claim_queries(self) -> int:
        """How many claim queries this worker ran (see the claim baton)."""
        return self._state.claim_queries

    # -- lifecycle ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Run in the foreground (the `zart worker` command, and each process of `zart supervise`).

        SIGTERM or SIGINT drains: no new claims, in-flight work gets up to `grace` seconds to
        finish, what is left is handed back. A second SIGINT stops at once. The process is the
        worker's, so its garbage collector is set for it (`tune_gc`).
        """
        tune_gc()
        if self._own_watchdog is not None:
            # Its own process: a worker whose loops stop going round kills it (zart.watchdog).
            self._liveness, self._watch_slot = Liveness.create(1, self._own_watchdog), 0
            self._state.went_round = partial(self._liveness.went_round, self._watch_slot)
            watch_self(self._liveness, self.worker_id)
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
                if self._state.draining:
                    if signum == signal.SIGINT:
                        log_event(log, "worker.stop_now", worker=self.worker_id, signal=name)
                        self._request_stop()
                    continue
                nursery.start_soon(self._drain, name)

    async def _drain(self, reason: str) -> None:
        """Stop claiming; give in-flight work `grace` seconds; then stop (handing back the rest)."""
        state = self._state
        state.draining = True
        self._unwatch()  # the claim loop ends now, by design
        state.wake_claimer()
        log_event(
            log,
            "worker.draining",
            worker=self.worker_id,
            reason=reason,
            in_flight=len(state.held),
            grace=self.grace,
        )
        if state.held:
            with trio.move_on_after(self.grace):
                await state.drained.wait()
        self._request_stop()

    def _supervisor_gone(self) -> None:
        """The heartbeat found the supervisor gone: finish up and exit, as at a SIGTERM."""
        trio.lowlevel.spawn_system_task(self._drain, "supervisor gone")

    def _request_stop(self) -> None:
        # Runners cancelled from here on keep their entry in the held table, so that the hand-back
        # (Leases.release_held) covers their tasks. Those waiting for a commit get it, or
        # CommitAbandoned once the completer gives up: a stop never waits on a database that does
        # not answer.
        self._state.stopping = True
        self._unwatch()
        if self._completer is not None:
            self._completer.give_up_after(_STOP_COMMIT_SECONDS)
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _unwatch(self) -> None:
        """From a drain or a stop on, the watchdog leaves this worker alone: its loops end."""
        self._state.went_round = unwatched
        if self._liveness is not None:
            self._liveness.unwatch(self._watch_slot)

    async def _main(self, handle_signals: bool = False) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._state.wake = trio.Event()
        self._state.drained = trio.Event()
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
        pool = self._pool
        assert pool is not None
        db = WorkerDb(pool, trio.CapacityLimiter(_POOL_SIZE), self.worker_id)
        url = self.database_url
        self._transactions = TransactionRunner(
            partial(
                open_pool,
                url,
                min_size=0,
                max_size=_TRANSACTION_POOL_SIZE,
                name="zart-transactions",
                keep_reconnecting=True,
            ),
            self.lease,
            trio.CapacityLimiter(_TRANSACTION_POOL_SIZE),
        )
        leases = Leases(
            self._state,
            db,
            lease=self.lease,
            supervisor_pid=self._supervisor_pid,
            on_orphaned=self._supervisor_gone,
        )
        try:
            # The completer lives in a nursery of its own, around the one of the runners: a stop
            # cancels the runners, and the completer is still there to answer the ones waiting
            # for a commit. If it dies, it answers them all (CommitAbandoned) as it goes.
            self._completer = Completer(
                pool,
                db.limiter,
                self.worker_id,
                connection=TrioConnection(self._engine_url),
                on_doubt=self._state.set_in_doubt,
            )
            async with trio.open_nursery() as services:
                services.start_soon(self._completer.run)
                await self._run_engine(handle_signals, db, leases)
                services.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                released = await leases.release_held(_STOP_CHECKOUT_SECONDS)
                await trio.to_thread.run_sync(partial(pool.close, timeout=_STOP_CHECKOUT_SECONDS))
                await trio.to_thread.run_sync(self._transactions.close)
            log_event(
                log,
                "worker.stopped",
                worker=self.worker_id,
                handed_back=released,
                runs=self.executions_finished,
                claims=self.claim_queries,
            )

    async def _run_engine(self, handle_signals: bool, db: WorkerDb, leases: Leases) -> None:
        """The listener, heartbeat, claimer and runners, until a stop cancels them."""
        assert self._completer is not None and self.database_url is not None
        state = self._state

        def start_child(*args: Any) -> ChildRun:
            return runner.start_child(*args)

        services = Services(
            self._completer,
            trio.CapacityLimiter(self.concurrency),
            self.worker_id,
            state.wake_claimer,
            self.max_abandoned,
            inline_fanout=self.inline_fanout,
            may_inline=self._may_inline,
            child_lease=self.lease,
            start_child=start_child,
            transactions=self._transactions,
        )
        runner = Runner(state, services, concurrency=self.concurrency, poll_interval=self.poll_interval)
        claimer = Claimer(
            state,
            db,
            runner.run_task,
            concurrency=self.concurrency,
            batch=self.batch,
            lease=self.lease,
            poll_interval=self.poll_interval,
            lookahead=self.lookahead,
            shared=self._claims,
            rank=self._claim_rank,
            connection=TrioConnection(self._engine_url),
        )
        with trio.CancelScope() as self._cancel_scope:
            if state.stopping:  # stop() came while we were connecting
                self._cancel_scope.cancel()
            async with trio.open_nursery() as nursery:
                runner.nursery = nursery
                if handle_signals:
                    nursery.start_soon(self._essential, "handle_signals", self._handle_signals, nursery)
                claims = self._claims
                if self._listens():
                    state.router = WakeRouter(self.group, self._group_has_room)
                    listener = Listener(
                        state,
                        self.database_url,
                        forward=partial(self._forward_wake, db),
                        read_groups=partial(self._read_groups, db),
                    )
                    nursery.start_soon(self._essential, "listen", listener.run)
                if claims is not None:  # a sibling's hand-over (the only wake-up of a spare)
                    nursery.start_soon(self._essential, "hand_overs", self._hand_overs, claims)
                nursery.start_soon(self._essential, "heartbeat", leases.heartbeat)
                nursery.start_soon(self._essential, "claim_loop", claimer.run, nursery)
                scheduler = Scheduler(db, self.database_url, poll_interval=self.poll_interval)
                nursery.start_soon(self._essential, "schedules", scheduler.run)
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

    def _listens(self) -> bool:
        """Whether this worker LISTENs: unless told not to, or a spare of a supervisor."""
        return self.listen and (self._claims is None or self._claims.is_primary(self._claim_rank))

    def _group_has_room(self) -> bool:
        """Whether any worker of this group may take more work now (zart.wake_routing)."""
        if self._claims is not None:
            return self._claims.any_room()
        return len(self._state.held) < self.concurrency

    async def _forward_wake(self, db: WorkerDb, payload: str) -> None:
        """Hand a notification on to the next group (zart.wake_routing); a hint: a failure is dropped."""
        try:
            await db.run(lambda conn: conn.execute(sql.FORWARD_WAKE, {"payload": payload}))
        except Exception as exc:
            if not is_transient(exc):
                raise

    async def _read_groups(self, db: WorkerDb) -> None:
        """The live listening groups, for this worker's router (zart.wake_routing)."""
        router = self._state.router
        assert router is not None
        try:
            groups = await db.run(read_live_groups)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return  # stale still: read at the next notification or heartbeat
        router.set_groups(groups)

    async def _hand_overs(self, claims: SharedClaims) -> None:
        """Wake the claimer whenever a sibling worker hands the next claim to this one."""
        while True:
            await claims.wait_for_wake(self._claim_rank)
            self._state.wake_claimer()

    def _may_inline(self) -> bool:
        """Whether a narrow fan-out's branches may run here: yes, unless the worker is draining (its
        branches then become tasks, and the workflow parks at once).

        A full worker runs them too: inline branches share their workflow's slot, and when every
        worker is busy, branch tasks only add a park, claims and a replay per fan-out (a `zart.map`
        of 8 cost 1.7-1.8x an inline step per step under a saturating load when a full worker handed
        its branches to tasks, 1.2-1.4x inline).
        """
        return not self._state.draining

    async def _essential(self, piece: str, fn: Callable[..., Any], *args: Any) -> None:
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
                piece=piece,
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
        outage = Outage(log, DB_RETRY_SECONDS, worker=self.worker_id)
        with contextlib.ExitStack() as stack:
            signals = None
            if handle_signals:
                signals = stack.enter_context(trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
            with trio.CancelScope() as self._cancel_scope:
                if self._state.stopping:  # stop() came before we got here
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
        # The engine's own connections: a transaction of theirs left open longer than a lease (the
        # process stopped half-way through one: SIGSTOP, a frozen VM) is ended by the server, so
        # that its row locks do not keep the tasks it held from the workers that take them over
        # (they claim with SKIP LOCKED). Not the transactional steps' connections: those run the
        # application's own code.
        self._engine_url = with_session_settings(
            url, "zart-worker", {"idle_in_transaction_session_timeout": f"{int(self.lease * 1000)}ms"}
        )
        url = self._engine_url
        pool = open_pool(url, min_size=1, max_size=_POOL_SIZE, name="zart-worker", keep_reconnecting=True)
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
                        "group": self.group,
                        "listens": self._listens(),
                        "lease": self.lease,
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
            entries = declared_entries()
            if entries:
                with pool.connection() as conn:
                    register(conn, entries)
        except BaseException:
            pool.close()
            raise
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
