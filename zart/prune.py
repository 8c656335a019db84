"""Retention: delete finished executions older than a cutoff (`zart prune`).

An execution is finished when it is `completed`, `failed`, `timed_out` or `cancelled`; its age is
counted from `finished_at`. Each batch removes up to `batch_size` executions with their steps,
attempts, events and any task left behind, in one statement and one short transaction, so a
prune of millions of rows never holds long locks or a long-running transaction. Executions that
are still running, sleeping or waiting are never touched, however old.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import attrs

from . import sql
from .db import connect
from .schema import ensure_migrated

DEFAULT_BATCH_SIZE = 1000


@attrs.define
class PruneResult:
    """What a prune removed (or, for a dry run, would remove: `executions` only)."""

    cutoff: datetime
    executions: int = 0
    steps: int = 0
    attempts: int = 0
    events: int = 0
    tasks: int = 0
    batches: int = 0


def prune(
    database_url: str,
    older_than: float,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_batch: Callable[[PruneResult, int], None] | None = None,
) -> PruneResult:
    """Delete finished executions whose `finished_at` is more than `older_than` seconds ago.

    `on_batch(total_so_far, removed_in_this_batch)` is called after each committed batch.
    """
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    if older_than <= 0:
        raise ValueError(f"the age must be greater than zero, got {older_than}")
    ensure_migrated(database_url)
    with connect(database_url) as conn:  # autocommit: each batch is its own transaction
        cutoff = conn.execute(sql.PRUNE_CUTOFF, {"seconds": older_than}).fetchone()[0]
        result = PruneResult(cutoff)
        if dry_run:
            result.executions = conn.execute(sql.COUNT_PRUNABLE, {"cutoff": cutoff}).fetchone()[0]
            return result
        while True:
            runs, steps, attempts, events, tasks = conn.execute(
                sql.PRUNE_BATCH, {"cutoff": cutoff, "limit": batch_size}
            ).fetchone()
            if runs == 0:
                break
            result.executions += runs
            result.steps += steps
            result.attempts += attempts
            result.events += events
            result.tasks += tasks
            result.batches += 1
            if on_batch is not None:
                on_batch(result, runs)
            if runs < batch_size:
                break
    return result
