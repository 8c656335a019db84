"""What a queue costs: throughput through a limited queue whose limit never binds, against no queue.

    python -m bench.queue_overhead --workflows 5000 --rounds 3 --procs 2

A real `zart supervise --procs P` starts, and once its workers wait, W workflows of 3 no-op steps
are started in one transaction (`zart.start_many`; the per-key case: one call per key). Each variant
runs on a fresh database, the variants alternate within each round (each run waits for an idle
machine first), and each is timed by the database from the first execution's begin (its
`started_at`, set when the claim admits it) to the last one's finish. The CPU time per workflow of
the workers and of their database sessions is reported too: it is steadier than the rates on a
shared machine. The variants:

- `default`: no queue named: the default queue, which has no limits;
- `concurrency 1000`: a queue limited to 1,000 executions in progress, which the workers can never
  reach (they hold at most procs x concurrency = 1,000): what admission into a limited queue costs
  (locking its row, counting its slots, the version check), and nothing else;
- `concurrency 10` and `per_key 2 x 50 keys`: limits that bind, for information: their throughput
  is set by the limit, not by the engine's overhead.

The headline is the median of the `concurrency 1000` runs over the median of the `default` runs
(the goal is at least 0.9). Prints a table, or one JSON line per run with `--json`.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import orjson
import psycopg

import zart
from zart.pools import close_pools

from . import apps, queue_apps
from .harness import CpuMeter, checkout, per_workflow, supervise, table, wait_for_completed, wait_for_quiet
from .throughput import FreshDatabase, server_url

STEPS = 3
KEYS = 50
VARIANTS: dict[str, tuple[zart.Queue | None, bool]] = {  # name -> (queue, one start_many per key)
    "default": (None, False),
    "concurrency 1000": (queue_apps.WIDE, False),
    "concurrency 10": (queue_apps.NARROW, False),
    f"per_key 2 x {KEYS} keys": (queue_apps.PER_KEY, True),
}
NOT_BINDING = ("default", "concurrency 1000")


def enqueue(url: str, workflows: int, queue: zart.Queue | None, per_key: bool) -> None:
    """Every workflow in one transaction (`connection=`), so that all of them become visible at once
    to the workers waiting for them: the per-key case's 50 calls too."""
    with psycopg.connect(url) as conn, conn.transaction():
        if not per_key:
            zart.start_many(apps.bench_steps, [STEPS] * workflows, queue=queue, connection=conn)
            return
        for k in range(KEYS):
            count = workflows // KEYS + (k < workflows % KEYS)
            zart.start_many(
                apps.bench_steps, [STEPS] * count, queue=queue, key=f"tenant-{k}", connection=conn
            )


def run(variant: str, workflows: int, procs: int, concurrency: int, batch: int) -> dict[str, Any]:
    queue, per_key = VARIANTS[variant]
    with FreshDatabase(server_url()) as database:
        url = database.url
        try:
            with (
                supervise(
                    url, procs, app="bench.queue_apps", concurrency=concurrency, batch=batch
                ) as supervisor,
                psycopg.connect(url, autocommit=True) as conn,
            ):
                meter = CpuMeter(conn, supervisor.pid)
                meter.start()
                enqueue(url, workflows, queue, per_key)
                wait_for_completed(url, workflows, supervisor, timeout=900)
                worker_cpu, database_cpu = meter.stop()
                first, last, queues = conn.execute(
                    "SELECT min(started_at), max(finished_at), array_agg(DISTINCT queue)"
                    " FROM zart_execution_runs"
                ).fetchone()
        finally:
            close_pools(url)
    expected = queue.name if queue else "default"
    if queues != [expected]:
        raise RuntimeError(f"{variant}: executions ran in {queues}, not in {expected!r}")
    seconds = (last - first).total_seconds()
    return {
        "benchmark": "queue-overhead",
        "case": variant,
        "engine": checkout(),
        "workflows": workflows,
        "steps": STEPS,
        "procs": procs,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(workflows / seconds, 1),
        "worker_cpu_ms_per_workflow": per_workflow(worker_cpu, workflows),
        "db_cpu_ms_per_workflow": per_workflow(database_cpu, workflows),
    }


def _median(runs: list[dict[str, Any]], variant: str, field: str) -> float | None:
    values = [r[field] for r in runs if r["case"] == variant and r.get(field) is not None]
    return statistics.median(values) if values else None


def summary(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float | None]:
    """Per variant: the median and the range of its runs; and the overhead ratio of the medians."""
    rows = []
    medians: dict[str, float] = {}
    for variant in VARIANTS:
        rates = [r["workflows_per_s"] for r in runs if r["case"] == variant]
        if not rates:
            continue
        medians[variant] = statistics.median(rates)
        rows.append(
            {
                "case": variant,
                "runs": len(rates),
                "median_workflows_per_s": medians[variant],
                "min": min(rates),
                "max": max(rates),
                "vs_default": round(medians[variant] / medians["default"], 3)
                if "default" in medians
                else None,
                "worker_cpu_ms": _median(runs, variant, "worker_cpu_ms_per_workflow"),
                "db_cpu_ms": _median(runs, variant, "db_cpu_ms_per_workflow"),
            }
        )
    ratio = rows[1]["vs_default"] if len(rows) > 1 and rows[1]["case"] == NOT_BINDING[1] else None
    return rows, ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=500, help="per worker process")
    parser.add_argument("--batch", type=int, default=200, help="tasks claimed per query")
    parser.add_argument("--no-binding", action="store_true", help="only the two variants of the ratio")
    parser.add_argument("--json", action="store_true", help="one JSON line per run, then the summary")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine before a run")
    args = parser.parse_args(argv)
    variants = list(NOT_BINDING if args.no_binding else VARIANTS)
    runs = []
    for _ in range(args.rounds):
        for variant in variants:
            if not args.no_wait:
                wait_for_quiet()
            result = run(variant, args.workflows, args.procs, args.concurrency, args.batch)
            runs.append(result)
            if args.json:
                print(orjson.dumps(result).decode(), flush=True)
    rows, ratio = summary(runs)
    if args.json:
        print(
            orjson.dumps({"benchmark": "queue-overhead-summary", "variants": rows, "ratio": ratio}).decode()
        )
    else:
        columns = [
            "case",
            "runs",
            "median_workflows_per_s",
            "min",
            "max",
            "vs_default",
            "worker_cpu_ms",
            "db_cpu_ms",
        ]
        print(table(rows, columns))
        print("(worker_cpu_ms, db_cpu_ms: median CPU milliseconds per workflow, workers and their sessions)")
        print(f"\nratio (concurrency 1000 / default, medians): {ratio}  engine {checkout()}")


if __name__ == "__main__":
    main()
