"""What a transactional step costs, against a plain one, in one run.

    python -m bench.transactions --workflows 2000 --steps 3 --procs 2

Two workflows of `steps` steps each (bench/apps.py): `bench-steps` (plain no-op steps) and
`bench-tx-steps` (transactional steps, each one UPDATE of a counter, spread over 10,000 rows). Each
case starts W workflows with one `zart.start_many` against a fresh database and `zart supervise
--procs P` (already claiming), and reports steps/s from the first execution's creation to the last
one's finish (the database's timestamps), and the worker CPU per step. A plain step's checkpoint is
batched with other executions' by the completer; a transactional step is its own transaction (the
body's writes, its checkpoint and its attempt), so the ratio is about what a commit of its own costs.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import psycopg

from zart.pools import close_pools

from . import apps
from .harness import steps_row, table, time_workflows
from .throughput import FreshDatabase, server_url

CASES = (("plain steps", apps.bench_steps), ("transactional steps", apps.bench_tx_steps))


def run_case(name: str, workflow: Any, workflows: int, steps: int, procs: int) -> dict[str, Any]:
    with FreshDatabase(server_url()) as database:
        url = database.url
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE bench_counters (id integer PRIMARY KEY, n bigint NOT NULL)")
                conn.execute(
                    "INSERT INTO bench_counters SELECT g, 0 FROM generate_series(0, %s) g",
                    (apps.COUNTERS - 1,),
                )
            seconds, worker_cpu = time_workflows(url, workflow, [steps] * workflows, procs)
            with psycopg.connect(url, autocommit=True) as conn:
                updates = conn.execute("SELECT sum(n) FROM bench_counters").fetchone()[0]
        finally:
            close_pools(url)
    expected = workflows * steps if workflow is apps.bench_tx_steps else 0
    if updates != expected:
        raise RuntimeError(f"{name}: {updates} updates for {workflows} x {steps} transactional steps")
    return steps_row("transactions", name, workflows, steps, seconds, worker_cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name, workflow in CASES:
        row = run_case(name, workflow, args.workflows, args.steps, args.procs)
        rows.append(row)
        if args.json:
            print(orjson.dumps(row).decode(), flush=True)
    plain = rows[0]["steps_per_s"]
    for row in rows:
        row["cost_vs_plain"] = round(plain / row["steps_per_s"], 2)
    if not args.json:
        print(table(rows, ["case", "seconds", "steps_per_s", "cost_vs_plain", "worker_cpu_us_per_step"]))


if __name__ == "__main__":
    main()
