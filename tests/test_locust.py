"""A short headless locust run against a real `zart serve` with a real supervisor: no failures.

`bench.load` does what docs/http-api.md shows by hand (fresh database, `zart supervise`, `zart serve`,
`locust --headless`); its summary is kept in bench/results/locust-ci.json (git-ignored).
"""

from __future__ import annotations

from bench.load import RESULTS, run

ENDPOINTS = {
    "POST start order",
    "POST deliver event",
    "GET get execution",
    "GET list executions",
    "POST start existing order",
}


def test_headless_locust_run_has_no_failures():
    summary = run(users=20, spawn_rate=10, duration="10s", procs=1, server_workers=1, name="ci")
    assert (RESULTS / "locust-ci.json").exists()
    assert summary["locust_exit_code"] == 0, summary
    assert summary["failures"] == 0, summary["failure_details"]
    assert summary["requests"] >= 100, summary
    assert set(summary["endpoints"]) == ENDPOINTS, summary["endpoints"]
    orders = summary["orders_by_status"]
    assert orders.get("completed", 0) > 0, orders  # shipped orders ran to the end
    assert set(orders) <= {"pending", "running", "waiting", "completed"}, orders
