"""A worker's own figures, for Prometheus: `zart worker --metrics-port N`, `zart supervise --metrics-port N`.

Off unless asked for: the engine's hot path then pays one test of `enabled` per batch, claim or run,
and prometheus_client is not even imported. On, the figures are recorded per batch and per claim, not
per step: a batch's attempt ends are counted in one pass when it has committed.

Under `zart supervise` the workers are forked processes: prometheus_client's multiprocess mode keeps
each one's values in files of a directory of the supervisor's (`PROMETHEUS_MULTIPROC_DIR`, set before
prometheus_client is first imported), and the supervisor's endpoint adds them up; a dead worker's
in-flight gauge is dropped when the supervisor reaps it (`process_dead`). The names are listed in
docs/operations.md ("Metrics of the workers").
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

enabled = False
_steps: Any = None
_claims: Any = None
_claim_seconds: Any = None
_commit_batches: Any = None
_commit_seconds: Any = None
_in_flight: Any = None
_multiprocess_dir: str | None = None

# Batch sizes and latencies: powers of two and of ten, from one to the largest batches.
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0)


def enable(port: int, *, processes: bool) -> None:
    """Start recording, and serve the figures over HTTP at `port` (every interface): this process's
    (`zart worker`), or those of the workers it forks (`processes`: `zart supervise`). Call before
    prometheus_client is imported anywhere in the process."""
    global enabled, _steps, _claims, _claim_seconds, _commit_batches, _commit_seconds, _in_flight
    global _multiprocess_dir
    if processes:
        _multiprocess_dir = tempfile.mkdtemp(prefix="zart-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _multiprocess_dir
        atexit.register(shutil.rmtree, _multiprocess_dir, ignore_errors=True)
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    _steps = Counter("zart_worker_steps", "Step attempts ended, by outcome", ["outcome"])
    _claims = Histogram("zart_worker_claimed_tasks", "Tasks taken per claim query", buckets=_SIZE_BUCKETS)
    _claim_seconds = Histogram(
        "zart_worker_claim_seconds", "How long a claim (query and reads) took", buckets=_SECONDS_BUCKETS
    )
    _commit_batches = Histogram(
        "zart_worker_commit_batch_size", "Executions' writes per completer commit", buckets=_SIZE_BUCKETS
    )
    _commit_seconds = Histogram(
        "zart_worker_commit_seconds", "How long a completer commit took", buckets=_SECONDS_BUCKETS
    )
    _in_flight = Gauge(
        "zart_worker_executions_in_flight",
        "Executions (and branch tasks) a worker holds",
        multiprocess_mode="livesum",
    )
    if processes:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=_multiprocess_dir)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
    enabled = True


def record_commit(attempt_ends: Iterable[tuple[Any, ...]], fragments: int, seconds: float) -> None:
    """A completer commit: its size and duration, and the attempts it ended, by outcome."""
    _commit_batches.observe(fragments)
    _commit_seconds.observe(seconds)
    for outcome, count in Tally(end[3] for end in attempt_ends).items():
        _steps.labels(outcome).inc(count)


def record_step(outcome: str) -> None:
    """An attempt that ended outside the completer (a transactional step's, in its own commit)."""
    _steps.labels(outcome).inc()


def record_claim(tasks: int, seconds: float) -> None:
    _claims.observe(tasks)
    _claim_seconds.observe(seconds)


def set_in_flight(count: int) -> None:
    _in_flight.set(count)


def process_dead(pid: int) -> None:
    """A forked worker is gone: its in-flight executions are no longer its (`livesum` gauges)."""
    if _multiprocess_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, _multiprocess_dir)
