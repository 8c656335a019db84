"""What a child workflow's round trip costs, against one inline step.

    python -m bench.children --workflows 200 --calls 8 --procs 2

Two workflows of `calls` calls each (bench/apps.py): `bench-steps` (a loop of no-op inline steps)
and `bench-children` (a loop of `zart.child` calls, each a `bench-child` of one no-op step: start
the child, run its step, end it, wake the parent). Each case starts W workflows with one
`zart.start_many` against a fresh database and `zart supervise --procs P` (already claiming), and
reports calls/s from the first execution's creation to the last one's finish (the database's
timestamps), and the worker CPU per call. Run twice: under load (W workflows at once: throughput)
and alone (one workflow at a time: a user's latency, from `zart.start` to the result). The ratio is
a child round trip's cost over an inline step's (time per call; goal: at most 3).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import psycopg

import zart
from zart.pools import close_pools

from . import apps
from .harness import CpuMeter, checkout, supervise, table, wait_for_completed
from .throughput import FreshDatabase, server_url

CASES = (("inline steps", apps.bench_steps), ("child workflows", apps.bench_children))


def run_case(name: str, workflow: Any, workflows: int, calls: int, procs: int, alone: int) -> list[dict]:
    """Under load (all W at once), then `alone` executions one after another."""
    rows = []
    with FreshDatabase(server_url()) as database:
        url = database.url
        try:
            with supervise(url, procs) as supervisor, psycopg.connect(url, autocommit=True) as conn:
                meter = CpuMeter(conn, supervisor.pid)
                meter.start()
                zart.start_many(workflow, [calls] * workflows, database_url=url)
                # every child is an execution too
                executions = workflows * (calls + 1 if workflow is apps.bench_children else 1)
                wait_for_completed(url, executions, supervisor, timeout=600)
                worker_cpu, _ = meter.stop()
                first, last = conn.execute(
                    "SELECT min(created_at), max(finished_at) FROM zart_execution_runs"
                ).fetchone()
                seconds = (last - first).total_seconds()
                rows.append(_row(name, "load", workflows, calls, seconds, worker_cpu))
                started = time.perf_counter()
                for _ in range(alone):
                    zart.start(workflow, calls, database_url=url).result(timeout=60)
                elapsed = time.perf_counter() - started
                rows.append(_row(name, "alone", alone, calls, elapsed, None))
        finally:
            close_pools(url)
    return rows


def _row(name: str, mode: str, workflows: int, calls: int, seconds: float, cpu: float | None) -> dict:
    return {
        "benchmark": "children",
        "case": name,
        "mode": mode,
        "engine": checkout(),
        "workflows": workflows,
        "calls": calls,
        "seconds": round(seconds, 3),
        "calls_per_s": round(workflows * calls / seconds, 1),
        "ms_per_call": round(1000 * seconds / (workflows * calls), 3),
        "worker_cpu_us_per_call": None if cpu is None else round(1e6 * cpu / (workflows * calls), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--alone", type=int, default=20, help="executions run one at a time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name, workflow in CASES:
        for row in run_case(name, workflow, args.workflows, args.calls, args.procs, args.alone):
            rows.append(row)
            if args.json:
                print(orjson.dumps(row).decode(), flush=True)
    inline = {row["mode"]: row["ms_per_call"] for row in rows if row["case"] == "inline steps"}
    for row in rows:
        row["cost_vs_inline"] = round(row["ms_per_call"] / inline[row["mode"]], 2)
    if not args.json:
        print(
            table(
                rows,
                [
                    "case",
                    "mode",
                    "seconds",
                    "calls_per_s",
                    "ms_per_call",
                    "cost_vs_inline",
                    "worker_cpu_us_per_call",
                ],
            )
        )


if __name__ == "__main__":
    main()
