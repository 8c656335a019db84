"""Does the cost per unit of work stay flat as the work grows? Four measurements, one JSON line each.

python -m bench.cost_growth long-workflows    # 1,000-step workflow vs 100 x a 10-step one
python -m bench.cost_growth full-table        # throughput with 1,000,000 finished executions
python -m bench.cost_growth backlog           # claim cost per task: 200,000 ready vs 1,000
python -m bench.cost_growth scale-out         # --procs 2 vs --procs 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import orjson
import psycopg

import zart
from zart import sql
from zart.pools import close_pools

from . import apps
from .throughput import FreshDatabase, enqueue, run, server_url


def long_workflows(short_steps: int = 10, long_steps: int = 1000) -> dict[str, Any]:
    """One execution of `long_steps` steps against `long_steps / short_steps` executions of
    `short_steps`, run one after another on one in-process worker: the per-step time must not grow
    with the length of the history (no replay of the history per step)."""
    with FreshDatabase(server_url()) as database, zart.Worker(database.url, concurrency=10):

        def timed(steps: int) -> float:
            handle = zart.start(apps.bench_steps, steps, database_url=database.url)
            began = time.perf_counter()
            handle.result(timeout=600)
            return time.perf_counter() - began

        timed(short_steps)  # warm up
        repeats = long_steps // short_steps
        short_total = sum(timed(short_steps) for _ in range(repeats))
        long_time = timed(long_steps)
        close_pools(database.url)
    return {
        "benchmark": "long-workflows",
        "short_steps": short_steps,
        "long_steps": long_steps,
        "short_total_seconds": round(short_total, 3),
        "long_seconds": round(long_time, 3),
        "per_step_ms_short": round(1000 * short_total / long_steps, 3),
        "per_step_ms_long": round(1000 * long_time / long_steps, 3),
        "ratio": round(long_time / short_total, 3),
        "bound": 1.5,
    }


def full_table(prefill: int = 1_000_000, workflows: int = 5000) -> dict[str, Any]:
    empty = run(2, workflows, 3, 500, 200)
    full = run(2, workflows, 3, 500, 200, prefill=prefill)
    return {
        "benchmark": "full-table",
        "finished_executions": prefill,
        "empty_checkpoints_per_s": empty["checkpoints_per_s"],
        "full_checkpoints_per_s": full["checkpoints_per_s"],
        "ratio": round(full["checkpoints_per_s"] / empty["checkpoints_per_s"], 3),
        "bound": 0.8,
    }


def _claim_all(url: str, batch: int = 100, sample: int = 20_000) -> float:
    """Seconds per claimed task, claiming (and deleting, as completion does) up to `sample` tasks."""
    claimed = 0
    with psycopg.connect(url, autocommit=True) as conn:
        # As on Zart's own connections (zart.db): with JIT on, every execution of the claim of queues
        # compiles it (about 40 ms), which would be measured instead of the claim.
        conn.execute("SET jit = off")
        conn.execute("VACUUM ANALYZE zart_tasks")
        began = time.perf_counter()
        while claimed < sample:
            with conn.transaction():
                rows = conn.execute(
                    sql.CLAIM_TASKS, {"limit": batch, "lease": 30.0, "worker": "bench", "lookahead": 0.0}
                ).fetchall()
                if not rows:
                    break
                conn.execute(sql.DELETE_TASKS, {"ids": [row[0] for row in rows]})
            claimed += len(rows)
        return (time.perf_counter() - began) / claimed


def backlog(small: int = 1000, large: int = 200_000) -> dict[str, Any]:
    results = {}
    for size in (small, large):
        with FreshDatabase(server_url()) as database:
            enqueue(database.url, size, 3)
            results[size] = _claim_all(database.url, sample=min(size, 20_000))
    return {
        "benchmark": "backlog",
        "small_backlog": small,
        "large_backlog": large,
        "us_per_task_small": round(1e6 * results[small], 2),
        "us_per_task_large": round(1e6 * results[large], 2),
        "ratio": round(results[large] / results[small], 3),
    }


def scale_out(workflows: int = 5000) -> dict[str, Any]:
    one = run(1, workflows, 3, 500, 200)
    two = run(2, workflows, 3, 500, 200)
    return {
        "benchmark": "scale-out",
        "procs_1_checkpoints_per_s": one["checkpoints_per_s"],
        "procs_2_checkpoints_per_s": two["checkpoints_per_s"],
        "ratio": round(two["checkpoints_per_s"] / one["checkpoints_per_s"], 3),
        "cpus": os.cpu_count(),
    }


BENCHMARKS = {
    "long-workflows": long_workflows,
    "full-table": full_table,
    "backlog": backlog,
    "scale-out": scale_out,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"])
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    for name in names:
        print(orjson.dumps(BENCHMARKS[name]()).decode(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
