"""What a step costs inside `zart.map` / `zart.parallel`, against the same step inline.

    python -m bench.branches --workflows 1000 --steps 8 --procs 2

Three workflows of `steps` no-op steps each (bench/apps.py): `bench-steps` (a loop of inline steps),
`bench-map` (one `zart.map` over the steps) and `bench-pairs` (rounds of `zart.parallel` of two).
Each case starts W workflows with one `zart.start_many` against a fresh database and `zart
supervise --procs P` (already claiming), and reports steps/s from the first execution's creation to
the last one's finish (the database's timestamps), and the worker CPU per step. Branch cases run
twice: inline (the default `--inline-fanout 32`: branches run in the workflow's own worker) and as
tasks (`--inline-fanout 0`: every branch a task any worker claims, as before issue 14). The ratio
is a branch step's cost over an inline step's (time per step; goal: at most 1.5).
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

CASES = (
    ("inline steps", apps.bench_steps, "32"),
    ("zart.map", apps.bench_map, "32"),
    ("zart.parallel x2", apps.bench_pairs, "32"),
    ("zart.map as tasks", apps.bench_map, "0"),
    ("zart.parallel x2 as tasks", apps.bench_pairs, "0"),
)


def run_case(name: str, workflow: Any, fanout: str, workflows: int, steps: int, procs: int) -> dict[str, Any]:
    with FreshDatabase(server_url()) as database:
        url = database.url
        try:
            seconds, worker_cpu = time_workflows(
                url, workflow, [steps] * workflows, procs, extra=("--inline-fanout", fanout)
            )
            with psycopg.connect(url, autocommit=True) as conn:
                recorded = conn.execute("SELECT count(*) FROM zart_steps").fetchone()[0]
        finally:
            close_pools(url)
    if recorded != workflows * steps:
        raise RuntimeError(f"{name}: {recorded} checkpoints for {workflows} x {steps} steps")
    return steps_row("branches", name, workflows, steps, seconds, worker_cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name, workflow, fanout in CASES:
        row = run_case(name, workflow, fanout, args.workflows, args.steps, args.procs)
        rows.append(row)
        if args.json:
            print(orjson.dumps(row).decode(), flush=True)
    inline = rows[0]["steps_per_s"]
    for row in rows:
        row["cost_vs_inline"] = round(inline / row["steps_per_s"], 2)
    if not args.json:
        print(table(rows, ["case", "seconds", "steps_per_s", "cost_vs_inline", "worker_cpu_us_per_step"]))


if __name__ == "__main__":
    main()
