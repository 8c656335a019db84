"""The supervisor's watchdog: a worker whose loops stopped going round is killed and replaced.

A worker can be alive and of no use. Its trio loop is blocked by a step that made a blocking call in
an async body (`time.sleep`, `requests.get`, minutes of CPU work), or one of its statements waits for
an answer that will never come (a proxy between it and PostgreSQL that keeps the connection open
after its backend went answers TCP keepalives itself, so the keepalives never fail). Its leases run
out and other workers take its executions over, as they should; but the process keeps its slot and
its connections for good, and nothing says why.

So each worker marks two loops in shared memory as they go round: the heartbeat (one renewal,
answered or failed: an outage does not stop it going round) and the claim loop (which goes round at
least every poll interval, full or not). The supervisor, once a second, kills with SIGKILL a worker
either of whose loops has not gone round for `limit` seconds, and logs which loop and for how long;
its usual replacement follows (the dead worker's tasks handed back at once). Watching begins at a
worker's first round, so a start-up that waits for the database is never counted, and ends when it
starts to drain (its claim loop stops then, by design).

`zart worker`, run alone (a process per container, say), watches itself the same way: a thread of
its own process reads its marks (`watch_self`) and, when a loop is stuck, kills the process with
SIGKILL for its process manager to restart. A thread still runs while a blocking call holds the trio
loop (the call releases the GIL, or Python switches threads every few milliseconds); a process
frozen as a whole (SIGSTOP) needs the supervisor.

The marks are `time.monotonic()` readings: CLOCK_MONOTONIC is one clock for every process of the
machine, and a wall-clock step (NTP) must not look like a hang.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import attrs

from .durations import parse_duration
from .logs import log_event

log = logging.getLogger("zart.watchdog")

# The loops a worker marks, by their place in its row of marks.
LOOPS = ("heartbeat", "claim_loop")
# The shortest default limit: far above a heartbeat round's worst case in an outage (the pool's
# 30 s wait for a connection), so that a worker waiting out an outage is never taken for hung.
MIN_DEFAULT_SECONDS = 60.0


def default_limit(lease: float, poll_interval: float) -> float:
    """How long a loop may go without a round by default: four leases or poll intervals, at least a
    minute. The heartbeat goes round every third of a lease and the claim loop every poll interval."""
    return max(MIN_DEFAULT_SECONDS, 4 * lease, 4 * poll_interval)


def resolve_limit(watchdog: Any, lease: float, poll_interval: float) -> float | None:
    """The limit `--watchdog` (`watchdog`) asks for, in seconds; None when it is off (0).

    None asks for the default. A limit under the lease or two poll intervals is refused: the
    heartbeat goes round every third of a lease and the claim loop every poll interval, so healthy
    workers would be killed.
    """
    if watchdog is None:
        return default_limit(lease, poll_interval)
    if str(watchdog).strip() in ("0", "off"):
        return None
    limit = parse_duration(watchdog, "--watchdog")
    floor = max(lease, 2 * poll_interval)
    if limit < floor:
        raise ValueError(
            f"--watchdog {watchdog} is shorter than the lease or two poll intervals ({floor:g}s): "
            "healthy workers would be killed (0 turns the watchdog off)"
        )
    return limit


def report_stuck(pid: int, loop: str, seconds: float, **where: Any) -> None:
    """The one log line of a kill, from the supervisor or the worker's own thread: which process,
    which loop, for how long, and what is likely wrong."""
    log_event(
        log,
        "worker.unresponsive",
        logging.ERROR,
        **where,
        pid=pid,
        loop=loop,
        seconds=round(seconds, 1),
        action="SIGKILL",
        hint="a blocking call in an async step stalls the worker's event loop (make it a def step: "
        "those run in threads), or a database connection never answers",
    )


@attrs.frozen
class Liveness:
    """Shared memory made by the supervisor before it forks: for each worker (by slot), when each
    of its `LOOPS` last went round (infinity: not watched)."""

    marks: Any
    limit: float

    @classmethod
    def create(cls, workers: int, limit: float) -> Liveness:
        if not limit > 0:
            raise ValueError(f"the watchdog's limit must be positive, got {limit!r}")
        marks = multiprocessing.Array("d", max(1, workers) * len(LOOPS), lock=False)
        for i in range(len(marks)):
            marks[i] = math.inf
        return cls(marks, limit)

    def went_round(self, rank: int, loop: str) -> None:
        """A worker's `loop` went round (from the worker)."""
        self.marks[rank * len(LOOPS) + LOOPS.index(loop)] = time.monotonic()

    def unwatch(self, rank: int) -> None:
        """Stop watching slot `rank`: a new worker until its first round, a draining one."""
        for i in range(len(LOOPS)):
            self.marks[rank * len(LOOPS) + i] = math.inf

    def stuck(self, rank: int, now: float | None = None) -> tuple[str, float] | None:
        """The loop of slot `rank` that has not gone round for longer than the limit, and for how
        long (the longest such); None while both go round. A loop not yet marked since the worker
        began to be watched counts from the other's first mark."""
        now = time.monotonic() if now is None else now
        row = [self.marks[rank * len(LOOPS) + i] for i in range(len(LOOPS))]
        watched = [mark for mark in row if not math.isinf(mark)]
        if not watched:
            return None
        since = min(watched)
        ages = [
            (now - (since if math.isinf(mark) else mark), loop) for mark, loop in zip(row, LOOPS, strict=True)
        ]
        age, loop = max(ages)
        return (loop, age) if age > self.limit else None


def watch_self(liveness: Liveness, worker_id: str, every: float = 1.0) -> threading.Thread:
    """Start a daemon thread that kills this process (SIGKILL) once one of its loops is stuck:
    the watchdog of a worker without a supervisor (slot 0 of `liveness`)."""

    def watch() -> None:
        while True:
            time.sleep(every)
            stuck = liveness.stuck(0)
            if stuck is not None:
                report_stuck(os.getpid(), *stuck, worker=worker_id)
                logging.shutdown()  # the line above reaches its handlers before the kill
                os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="zart-watchdog", daemon=True)
    thread.start()
    return thread
