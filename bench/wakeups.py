"""Sleeps come due on time under load: the lateness of durable sleeps while other work runs.

    python -m bench.wakeups --sleepers 1000 --busy 2000 --procs 2

Starts `sleepers` workflows that sleep `--seconds` (`zart.sleep`) and then run one step, and `busy`
workflows of `--busy-steps` steps (20 by default: they are still running when the sleeps come due),
all at once (two `zart.start_many` calls), against `zart supervise --procs P`.
A sleeper's lateness is its step's attempt start minus its sleep's deadline (`wake_at`), as both are
recorded in the database: the timer's wake-up, the claim, the history load and the attempt's commit
while the busy workflows compete for the same workers. Reports the median, p99 and maximum.

`--busy-step-seconds S` makes each busy step wait S seconds on I/O (`trio.sleep`) instead of doing
nothing: a load that holds worker slots but not the CPU, as calls to other services do; with
`--concurrency` large enough for every execution, it measures the timers themselves under load.

With the default `--concurrency` (500 per process), the busy workflows outnumber the slots: a
sleeper that comes due waits for a slot (resumed executions are claimed before new ones, but a
running one keeps its slot until it ends), so the lateness measures the slots, not the timers.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import orjson
import psycopg

import zart
from zart.pools import close_pools

from . import apps
from .harness import supervise, wait_for_completed
from .throughput import FreshDatabase, server_url

LATENESS = """
SELECT extract(epoch FROM a.started_at - s.wake_at)::float8
FROM zart_steps s
JOIN zart_step_attempts a ON a.execution_id = s.execution_id AND a.step_key = 'bench-noop#1'
WHERE s.kind = 'sleep' AND s.execution_id = ANY(%(ids)s)
"""


def run(
    sleepers: int,
    busy: int,
    seconds: float,
    procs: int,
    busy_steps: int = 20,
    concurrency: int = 500,
    busy_step_seconds: float = 0.0,
) -> dict[str, Any]:
    with FreshDatabase(server_url()) as database:
        url = database.url
        try:
            with supervise(url, procs, concurrency=concurrency) as supervisor:
                sleeping = zart.start_many(apps.bench_sleeper, [seconds] * sleepers, database_url=url)
                if busy_step_seconds:  # steps that wait on I/O: they hold slots, not the CPU
                    zart.start_many(
                        apps.bench_io_steps, [[busy_steps, busy_step_seconds]] * busy, database_url=url
                    )
                else:
                    zart.start_many(apps.bench_steps, [busy_steps] * busy, database_url=url)
                wait_for_completed(url, sleepers + busy, supervisor, timeout=300 + seconds)
            with psycopg.connect(url, autocommit=True) as conn:
                late = sorted(
                    row[0] for row in conn.execute(LATENESS, {"ids": [h.id for h in sleeping]}).fetchall()
                )
        finally:
            close_pools(url)
    if len(late) != sleepers:
        raise RuntimeError(f"{len(late)} of {sleepers} sleepers recorded their wake-up")
    return {
        "benchmark": "wakeups",
        "sleepers": sleepers,
        "busy": busy,
        "busy_steps": busy_steps,
        "seconds": seconds,
        "procs": procs,
        "concurrency": concurrency,
        "busy_step_seconds": busy_step_seconds,
        "late_median_ms": round(1000 * statistics.median(late), 1),
        "late_p99_ms": round(1000 * late[max(0, int(0.99 * len(late)) - 1)], 1),
        "late_max_ms": round(1000 * late[-1], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleepers", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--busy-steps", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=500, help="per worker process")
    parser.add_argument(
        "--busy-step-seconds",
        type=float,
        default=0.0,
        help="each busy step waits this long on I/O (0: no-op steps, a CPU-bound load)",
    )
    args = parser.parse_args(argv)
    row = run(
        args.sleepers,
        args.busy,
        args.seconds,
        args.procs,
        args.busy_steps,
        args.concurrency,
        args.busy_step_seconds,
    )
    print(orjson.dumps(row).decode())


if __name__ == "__main__":
    main()
