"""Idle wake-up latency: from `zart.start` to the first step starting, on an idle `zart supervise`.

    python -m bench.latency --runs 100 --procs 2 --steps 3

Starts executions one at a time (each waits for the previous to finish, so the system is idle at
every start) and reports the median and p95 of (first attempt's start - execution's created_at):
the NOTIFY, the wake-up, the claim, the history load and the attempt's commit; and the median and
p99 of start to result as the caller sees it (`zart.start(...)` then `handle.result()`), for a
workflow of `steps` steps (3 by default: the figure issue 14's goal 4 names).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson
import psycopg

import zart
from zart.pools import close_pools

from . import apps
from .throughput import REPO_ROOT, FreshDatabase, server_url


def measure(runs: int, procs: int, listen: bool = True, steps: int = 3) -> dict[str, Any]:
    with FreshDatabase(server_url()) as database:
        url = database.url
        env = dict(os.environ, ZART_DATABASE_URL=url, PYTHONPATH=str(REPO_ROOT))
        command = [sys.executable, "-m", "zart", "supervise", "--app", "bench.apps", "--procs", str(procs)]
        if not listen:
            command += ["--no-listen", "--poll-interval", "0.5s"]
        supervisor = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        try:
            started = 0
            while started < procs:  # wait until every worker is claiming
                line = supervisor.stderr.readline()
                if not line:
                    raise RuntimeError("the supervisor exited early")
                started += "event=worker.started" in line
            for _ in range(5):  # warm up: connections, prepared statements
                zart.start(apps.bench_steps, steps, database_url=url).result(timeout=30)
            latencies = []
            results = []  # start to result, as the caller sees it
            with psycopg.connect(url, autocommit=True) as conn:
                for _ in range(runs):
                    began = time.perf_counter()
                    handle = zart.start(apps.bench_steps, steps, database_url=url)
                    handle.result(timeout=30)
                    results.append(time.perf_counter() - began)
                    latencies.append(
                        conn.execute(
                            "SELECT extract(epoch FROM a.started_at - r.created_at)::float8"
                            " FROM zart_step_attempts a JOIN zart_execution_runs r ON r.id = a.execution_id"
                            " WHERE a.execution_id = %s AND a.attempt = 1 ORDER BY a.started_at LIMIT 1",
                            (handle.id,),
                        ).fetchone()[0]
                    )
        finally:
            supervisor.terminate()
            supervisor.wait(30)
            close_pools(url)
    latencies.sort()
    results.sort()
    return {
        "benchmark": "idle-latency",
        "runs": runs,
        "procs": procs,
        "listen": listen,
        "steps": steps,
        "median_ms": round(1000 * statistics.median(latencies), 3),
        "p95_ms": round(1000 * latencies[int(0.95 * len(latencies)) - 1], 3),
        "result_median_ms": round(1000 * statistics.median(results), 3),
        "result_p99_ms": round(1000 * results[max(0, int(0.99 * len(results)) - 1)], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    print(orjson.dumps(measure(args.runs, args.procs, steps=args.steps)).decode())


if __name__ == "__main__":
    main()
