"""`GET /metrics` on a real `zart serve` (issue 18): the Prometheus text format, parsed by
prometheus_client's own parser, with figures that change as workflows run."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

import zart
from bench import apps

from .helpers import wait_until
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
