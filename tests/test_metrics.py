"""`GET /metrics` on a real `zart serve` (issue 18): the Prometheus text format, parsed by
prometheus_client's own parser, with figures that change as workflows run."""

from __future__ import annotations

import os
import signal
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

import zart
from bench import apps

from .helpers import SupervisorProcess, child_pids, wait_until
from .test_http import serving


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_follow_the_workflows_as_they_run(fresh_database_url):
    url = fresh_database_url
    finished = ("zart_executions_finished", (("status", "completed"), ("workflow", "bench-steps")))
    sleeping = ("zart_executions", (("status", "sleeping"), ("workflow", "bench-sleeper")))
    with serving(url, "bench.apps") as base, httpx.Client(base_url=base, timeout=30) as http:
        before = scrape(http)
        assert before.get(finished, 0) == 0
        assert before[("zart_workers", ())] >= 1 and before[("zart_worker_slots", ())] >= 1
        assert before[("zart_queue_in_progress", (("queue", "default"),))] == 0
        handles = zart.start_many(apps.bench_steps, [3] * 5, database_url=url)
        assert [handle.result(timeout=30) for handle in handles] == [3] * 5
        napping = zart.start(apps.bench_sleeper, 3600, database_url=url)
        wait_until(lambda: scrape(http).get(sleeping, 0) == 1, what="the sleeper asleep")
        after = scrape(http)
        assert after[finished] == 5
        assert after[("zart_queue_in_progress", (("queue", "default"),))] == 1  # the sleeper's slot
        assert after[("zart_ready_tasks", ())] == 0
        napping.cancel()
        assert scrape(http).get(sleeping, 0) == 0
        refused = http.get("/metrics", params={"workflow": "bench-steps"})
        assert refused.status_code == 422
        assert refused.json()["error"]["message"] == "unknown query parameter 'workflow' (there are none)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_figures(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_supervise_serves_its_workers_figures_added_up(fresh_database_url, subprocess_env):
    """`zart supervise --procs 2 --metrics-port N`: the steps, claims and commits of both forked
    workers on one endpoint, still served after a worker was SIGKILLed and replaced."""
    url, port = fresh_database_url, free_port()
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    supervisor = SupervisorProcess(env, "--procs", "2", "--metrics-port", str(port), app="bench.apps")
    succeeded = ("zart_worker_steps_total", (("outcome", "succeeded"),))
    try:
        supervisor.wait_workers(2)
        handles = zart.start_many(apps.bench_steps, [3] * 20, database_url=url)
        assert [handle.result(timeout=30) for handle in handles] == [3] * 20
        wait_until(lambda: worker_figures(port).get(succeeded) == 60, what="60 steps counted")
        figures = worker_figures(port)
        assert figures[("zart_worker_commit_batch_size_count", ())] >= 1
        assert figures[("zart_worker_commit_seconds_count", ())] >= 1
        assert figures[("zart_worker_claimed_tasks_sum", ())] >= 20
        os.kill(child_pids(supervisor.process.pid)[0], signal.SIGKILL)
        supervisor.wait_workers(2)
        more = zart.start_many(apps.bench_steps, [3] * 10, database_url=url)
        assert [handle.result(timeout=30) for handle in more] == [3] * 10
        wait_until(lambda: worker_figures(port).get(succeeded, 0) >= 90, what="the next 30 steps counted")
        assert worker_figures(port)[("zart_worker_executions_in_flight", ())] == 0
    finally:
        assert supervisor.stop() == 0
