"""Prometheus metrics of a Zart database, for `GET /metrics` on `zart serve`.

Read from the database at each scrape, so they are the same whichever `zart serve` answers and
however many workers run: executions in progress and those ended in the last hour (by workflow and
status), the ready backlog of begun executions and its oldest age, each queue's counts, and the live
workers. Every query is a range of an index, whatever the size of the tables (the ended executions
through `zart_execution_runs_finished_idx`), so a scrape costs the same on a database of a million
executions. The names are listed in docs/http-api.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import sql
from .pools import transaction
from .queue_admin import queue_stats

# What `zart_executions_finished` counts: executions ended in this many seconds before the scrape.
FINISHED_WINDOW_SECONDS = 3600

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    """The metric families of one reading of the database (a collector made for one scrape)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def read(database_url: str) -> bytes:
    """The metrics of the database at `database_url`, in Prometheus's text format."""
    with transaction(database_url) as conn:
        live = conn.execute(sql.METRICS_LIVE_EXECUTIONS).fetchall()
        finished = conn.execute(
            sql.METRICS_FINISHED_EXECUTIONS, {"seconds": FINISHED_WINDOW_SECONDS}
        ).fetchall()
        ready, oldest = conn.execute(sql.METRICS_READY_TASKS).fetchone()
        workers, slots = conn.execute(sql.METRICS_WORKERS).fetchone()
    queues = queue_stats(database_url=database_url)
    executions = GaugeMetricFamily(
        "zart_executions", "Executions not ended, by workflow and status", labels=["workflow", "status"]
    )
    for workflow, status, count in live:
        executions.add_metric([workflow, status], count)
    ended = GaugeMetricFamily(
        "zart_executions_finished",
        f"Executions ended in the last {FINISHED_WINDOW_SECONDS} s, by workflow and status",
        labels=["workflow", "status"],
    )
    for workflow, status, count in finished:
        ended.add_metric([workflow, status], count)
    families: list[Metric] = [
        executions,
        ended,
        GaugeMetricFamily(
            "zart_ready_tasks", "Tasks of begun executions ready for a worker and not taken yet", value=ready
        ),
        GaugeMetricFamily(
            "zart_oldest_ready_seconds", "How long the oldest of those ready tasks has waited", value=oldest
        ),
        GaugeMetricFamily("zart_workers", "Workers with a recent heartbeat", value=workers),
        GaugeMetricFamily("zart_worker_slots", "Executions those workers may run at once", value=slots),
    ]
    per_queue = {
        "zart_queue_ready": ("Executions due to begin in the queue and not begun", "ready"),
        "zart_queue_delayed": ("Executions of the queue whose start is delayed", "delayed"),
        "zart_queue_in_progress": (
            "Executions of the queue begun and not ended (its slots taken)",
            "in_progress",
        ),
        "zart_queue_oldest_ready_seconds": (
            "How long the queue's oldest due execution has waited",
            "oldest_ready_seconds",
        ),
    }
    for name, (documentation, field) in per_queue.items():
        family = GaugeMetricFamily(name, documentation, labels=["queue"])
        for queue in queues:
            family.add_metric([queue.name], getattr(queue, field) or 0)
        families.append(family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)
