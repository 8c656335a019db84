"""The start and queue benchmarks run, at a tiny scale, so that CI notices when one breaks.

They assert only that every case ran and wrote what it should (the rows are counted by the
benchmarks themselves): the figures of a run this small say nothing, docs/benchmarks.md has those.
"""

from __future__ import annotations

from typing import Any

from . import queue_overhead, starts
from .throughput import FreshDatabase, server_url


def test_every_start_case_creates_its_rows_and_runs_end_to_end():
    counts = {"sequential": 20, "concurrent": 40, "bulk": 200}
    with FreshDatabase(server_url()) as database:  # one database for the pure cases, to stay fast
        rows = [starts.pure(case, n, how, database.url) for case, n, how in starts._pure_cases(counts)]
    assert [r["rows"] for r in rows] == [20, 40, 200, 200], rows
    assert all(r["starts_per_s"] > 0 for r in rows), rows
    for how in ("start_many", "astart x64"):
        result = starts.end_to_end(how, workflows=30, procs=2, concurrency=500, batch=200)
        assert result["workflows_per_s"] > 0, result


def test_the_queue_variants_run_in_their_queues():
    # The two binding variants: the ratio's two run the same code with another queue object.
    runs: list[dict[str, Any]] = [
        queue_overhead.run(variant, workflows=100, procs=2, concurrency=500, batch=200)
        for variant in ("concurrency 10", f"per_key 2 x {queue_overhead.KEYS} keys")
    ]
    assert all(r["workflows_per_s"] > 0 for r in runs), runs  # run() checked the queue of every row
    fake = [
        {"case": "default", "workflows_per_s": 100.0},
        {"case": "concurrency 1000", "workflows_per_s": 95.0},
    ]
    rows, ratio = queue_overhead.summary(fake)
    assert ratio == 0.95 and [r["case"] for r in rows] == ["default", "concurrency 1000"]
