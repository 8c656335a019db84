"""`zart supervise`: fork N worker processes, keep N alive, drain them on SIGTERM/SIGINT.

The supervisor imports the app and migrates before forking, so an app that fails to import is
reported once, by the supervisor, and nothing is forked. Each child runs one `Worker` (a trio loop)
in its own process group (a terminal's Ctrl-C reaches only the supervisor, which forwards one SIGTERM
to each child) and exits when the supervisor disappears.

A child that dies is replaced; one that dies within `STARTUP_SECONDS` of its start counts as a
start-up failure, and after `MAX_STARTUP_FAILURES` in a row the supervisor stops everything and exits
non-zero instead of spinning. Replacements are spaced by an exponential back-off.

A database outage is not a crash loop: workers wait for the database rather than exit, and one that
exits all the same because the database could not be reached (status `EXIT_DATABASE_UNAVAILABLE`)
is replaced with a back-off capped at `DATABASE_RETRY_SECONDS` and never counts towards giving up:
the supervisor outlives an outage of any length and has workers again soon after it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

import attrs
import psycopg

from . import sql, worker_metrics
from .db import connect, unreachable
from .durations import parse_duration
from .errors import ZartError
from .logs import log_event
from .shared_claims import SharedClaims
from .watchdog import Liveness, report_stuck, resolve_limit

log = logging.getLogger("zart.supervisor")

STARTUP_SECONDS = 5.0
# How long the supervisor may spend handing a dead worker's tasks back; past it (the database is
# slow or away), the tasks wait for their leases, as without a supervisor.
RELEASE_SECONDS = 2.0
MAX_STARTUP_FAILURES = 5
EXIT_DATABASE_UNAVAILABLE = os.EX_TEMPFAIL  # 75: "try again later"
DATABASE_RETRY_SECONDS = 2.0
_HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)


@attrs.define
class _Child:
    slot: int
    pid: int
    started: float
    killed: bool = False  # by the watchdog, and not yet reaped


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


class Supervisor:
    """Runs `procs` workers with the given `Worker` options until told to stop."""

    def __init__(
        self,
        database_url: str,
        procs: int,
        grace: float,
        worker_options: dict[str, Any],
        name: str | None = None,
        watchdog: Any = None,
    ) -> None:
        if procs < 1:
            raise ValueError("--procs must be at least 1")
        if name is not None and not name.strip():
            raise ValueError("--name must not be empty")
        self.database_url = database_url
        self.procs = procs
        self.grace = grace
        # The group its workers form for notifications (zart.wake_routing): one per machine.
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.worker_options = {**worker_options, "group": self.name}
        self._children: dict[int, _Child] = {}
        # Shared by the forked workers: the claim baton, and one primary worker per CPU. A primary
        # whose claim loop has not gone round for two poll intervals no longer holds the others back.
        poll = parse_duration(worker_options.get("poll_interval") or "5s", "poll_interval")
        self._claims = SharedClaims.create(len(os.sched_getaffinity(0)), procs, alive_seconds=2 * poll + 1)
        self._liveness = self._watchdog(watchdog, poll)
        self._startup_failures = 0
        self._database_exits = 0  # workers in a row that exited because the database was unreachable
        self._stopping = False

    def _watchdog(self, watchdog: Any, poll: float) -> Liveness | None:
        """The watchdog's shared memory (zart.watchdog), None when it is off (`--watchdog 0`)."""
        lease = parse_duration(self.worker_options.get("lease") or "30s", "lease")
        limit = resolve_limit(watchdog, lease, poll)
        return None if limit is None else Liveness.create(self.procs, limit)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit 0) or repeated start-up failures (exit 1)."""
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            return self._supervise(previous_mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            self._claims.close()

    def _supervise(self, previous_mask: set[signal.Signals]) -> int:
        log_event(log, "supervisor.started", pid=os.getpid(), procs=self.procs, name=self.name)
        for slot in range(self.procs):
            self._spawn(slot, previous_mask)
        respawn_at: dict[int, float] = {}
        while True:
            timeout = 1.0
            if respawn_at:
                timeout = max(0.0, min(respawn_at.values()) - time.monotonic())
            received = signal.sigtimedwait(_HANDLED, timeout)
            if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                return self._shutdown(signal.Signals(received.si_signo))
            for slot, child, status in self._reap():
                self._claims.publish(child.slot, 0)  # no room there until its replacement runs
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                    self._release_claims_of(child)
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_DATABASE_UNAVAILABLE:
                    # The database is the problem, not the worker: wait it out, never give up.
                    self._database_exits += 1
                    delay = min(0.1 * (2 ** (self._database_exits - 1)), DATABASE_RETRY_SECONDS)
                    respawn_at[slot] = time.monotonic() + delay
                    continue
                self._database_exits = 0
                # A worker that exits by itself soon after it started failed at start-up; one that
                # was killed (SIGKILL, OOM) or ran for a while is replaced without holding back.
                if not os.WIFSIGNALED(status) and time.monotonic() - child.started < STARTUP_SECONDS:
                    self._startup_failures += 1
                else:
                    self._startup_failures = 0
                if self._startup_failures >= MAX_STARTUP_FAILURES:
                    log_event(
                        log,
                        "supervisor.giving_up",
                        logging.ERROR,
                        failures=self._startup_failures,
                        reason="workers keep dying at start-up; see their errors above",
                    )
                    self._shutdown(signal.SIGTERM)
                    return 1
                delay = min(0.1 * (2**self._startup_failures), 10.0) if self._startup_failures else 0.0
                respawn_at[slot] = time.monotonic() + delay
            now = time.monotonic()
            for slot in [s for s, at in respawn_at.items() if at <= now]:
                del respawn_at[slot]
                self._spawn(slot, previous_mask)
            self._watch()

    def _watch(self) -> None:
        """Kill each worker the watchdog finds stuck (zart.watchdog); the reap replaces it."""
        liveness = self._liveness
        if liveness is None:
            return
        for child in list(self._children.values()):
            stuck = liveness.stuck(child.slot)
            if stuck is None or child.killed:
                continue
            report_stuck(child.pid, *stuck, slot=child.slot)
            child.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

    def _reap(self) -> list[tuple[int, _Child, int]]:
        dead = []
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self._children.pop(pid, None)
            if child is None:
                continue
            log_event(
                log,
                "worker.exited",
                logging.INFO if self._stopping else logging.WARNING,
                pid=pid,
                slot=child.slot,
                status=_describe(status),
            )
            dead.append((child.slot, child, status))
            if worker_metrics.enabled:
                worker_metrics.process_dead(pid)
        return dead

    def _release_claims_of(self, child: _Child) -> None:
        """Hand the tasks of a worker that just died back at once, not at the end of their leases.

        The child is reaped, so it can write nothing more; what it left in flight in the database
        rolls back when its connections close. Best effort: when the database cannot be reached in
        RELEASE_SECONDS, the leases bring the tasks back as they always did.
        """
        lease = parse_duration(self.worker_options.get("lease", "30s"), "lease")
        try:
            with connect(self.database_url, timeout=RELEASE_SECONDS) as conn:
                conn.execute(f"SET statement_timeout = {int(RELEASE_SECONDS * 1000)}")
                released = conn.execute(
                    sql.RELEASE_DEAD_WORKER,
                    {
                        "host": socket.gethostname(),
                        "pid": child.pid,
                        "supervisor_pid": os.getpid(),
                        "lease": lease,
                    },
                ).fetchall()
                if released:
                    conn.execute(sql.NOTIFY_TASKS)
        except (psycopg.Error, OSError, ZartError) as exc:
            log_event(log, "worker.release_failed", logging.WARNING, pid=child.pid, error=exc)
            return
        log_event(log, "worker.released", pid=child.pid, tasks=len(released))

    def _spawn(self, slot: int, previous_mask: set[signal.Signals]) -> None:
        if self._liveness is not None:
            self._liveness.unwatch(slot)  # watched from the new worker's first round on
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.setpgid(0, 0)
                for signum in _HANDLED:
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
                from .worker import Worker

                Worker(
                    self.database_url,
                    claims=self._claims,
                    claim_rank=slot,
                    liveness=self._liveness,
                    watchdog=0,  # the supervisor watches (or, --watchdog 0, nobody): not the worker
                    supervisor_pid=os.getppid(),
                    grace=self.grace,
                    **self.worker_options,
                ).run()
                code = 0
            except BaseException as exc:  # the child must always leave through os._exit
                code = EXIT_DATABASE_UNAVAILABLE if unreachable(exc) else 1
                log_event(
                    log,
                    "worker.crashed",
                    logging.ERROR,
                    pid=os.getpid(),
                    error=f"{type(exc).__name__}: {exc}",
                )
            finally:
                # Done: a late SIGTERM from the supervisor must not turn a clean exit into a kill.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                logging.shutdown()
                os._exit(code)
        self._children[pid] = _Child(slot, pid, time.monotonic())
        log_event(log, "worker.spawned", pid=pid, slot=slot)

    def _shutdown(self, reason: signal.Signals) -> int:
        """SIGTERM every child, wait for them to drain, SIGKILL what is left after the grace period.

        A second SIGINT while waiting stops the children at once.
        """
        self._stopping = True
        log_event(
            log, "supervisor.stopping", reason=reason.name, children=len(self._children), grace=self.grace
        )
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5.0
        while self._children and time.monotonic() < deadline:
            received = signal.sigtimedwait(_HANDLED, 0.2)
            if received is not None and received.si_signo == signal.SIGINT:
                log_event(log, "supervisor.stop_now")
                self._signal_children(signal.SIGINT)  # the workers' second signal: stop at once
            self._reap()
        if self._children:
            log_event(log, "supervisor.killing", logging.WARNING, children=len(self._children))
            self._signal_children(signal.SIGKILL)
            while self._children:
                signal.sigtimedwait(_HANDLED, 0.2)
                self._reap()
        log_event(log, "supervisor.stopped")
        return 0

    def _signal_children(self, signum: signal.Signals) -> None:
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
                os.kill(pid, signum)
