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

The marks are `time.monotonic()` readings: CLOCK_MONOTONIC is one clock for every process of the
machine, and a wall-clock step (NTP) must not look like a hang.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from typing import Any

import attrs

# The loops a worker marks, by their place in its row of marks.
LOOPS = ("heartbeat", "claim_loop")
# The shortest default limit: far above a heartbeat round's worst case in an outage (the pool's
# 30 s wait for a connection), so that a worker waiting out an outage is never taken for hung.
MIN_DEFAULT_SECONDS = 60.0


def default_limit(lease: float, poll_interval: float) -> float:
    """How long a loop may go without a round by default: four leases or poll intervals, at least a
    minute. The heartbeat goes round every third of a lease and the claim loop every poll interval."""
    return max(MIN_DEFAULT_SECONDS, 4 * lease, 4 * poll_interval)


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
