"""Leases: keeping the tasks this worker holds, noticing the ones it lost, handing them back at a stop.

A claimed task belongs to its worker until its lease runs out (`run_at`). The heartbeat renews the
leases of every held task every `lease / 3`, together with the worker's own row; a task that was
taken over meanwhile (its lease lapsed, it was cancelled) has its runner cancelled. At a stop, the
held tasks are handed back at once, so another worker resumes them without waiting for the lease.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import psycopg
import trio

from . import sql
from .db import is_transient
from .logs import log_event
from .wake_routing import read_live_groups
from .workerstate import ClaimedTask, WorkerDb, WorkerState

log = logging.getLogger("zart.worker")


class Leases:
    """The heartbeat of one worker's leases, and their hand-back at its stop."""

    def __init__(
        self,
        state: WorkerState,
        db: WorkerDb,
        *,
        lease: float,
        supervisor_pid: int | None,
        on_orphaned: Callable[[], None],
    ) -> None:
        self._state = state
        self._db = db
        self._lease = lease
        # The heartbeat's tick also checks that the worker's supervisor is alive; when it is gone,
        # `on_orphaned` (the worker's drain) finishes up the work, and the process exits.
        self._supervisor_pid = supervisor_pid
        self._on_orphaned = on_orphaned

    async def heartbeat(self) -> None:
        """Every lease/3: renew held leases and this worker's row; cancel what was taken over.

        A task also drops out of the renewal when its execution finished or was handed back while
        the renewal ran, so a task counts as lost only when two renewals in a row miss it.
        """
        state = self._state
        suspects: set[int] = set()
        while True:
            await trio.sleep(self._lease / 3)
            orphaned = self._supervisor_pid is not None and os.getppid() != self._supervisor_pid
            if orphaned and not state.draining:
                self._on_orphaned()
            held = list(state.held.values())
            try:
                kept, groups = await self._db.run(self._beat, [h.task for h in held])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                state.went_round("heartbeat")  # answered, if by an error: not hung
                log_event(log, "heartbeat.failed", logging.WARNING, worker=state.worker_id, error=exc)
                continue
            state.went_round("heartbeat")
            if state.router is not None:
                state.router.set_groups(groups)
            missed = {entry.task.id for entry in held if entry.task.id not in kept}
            for entry in held:
                task_id = entry.task.id
                if task_id in missed and task_id in suspects and state.held.get(task_id) is entry:
                    log_event(
                        log,
                        "lease.lost",
                        logging.WARNING,
                        worker=state.worker_id,
                        execution=entry.task.execution_id,
                    )
                    entry.scope.cancel()
            suspects = missed

    def _beat(self, conn: psycopg.Connection, tasks: list[ClaimedTask]) -> tuple[set[int], list[str]]:
        """Renew the worker's row and `tasks`' leases; read the live groups (zart.wake_routing)."""
        conn.execute(sql.WORKER_HEARTBEAT, {"id": self._state.worker_id})
        kept = self._extend(conn, tasks) if tasks else set()
        groups = read_live_groups(conn) if self._state.router is not None else []
        return kept, groups

    def _extend(self, conn: psycopg.Connection, tasks: Iterable[ClaimedTask]) -> set[int]:
        tasks = sorted(tasks, key=lambda t: t.id)
        rows = conn.execute(
            sql.EXTEND_LEASES,
            {
                "lease": self._lease,
                "ids": [t.id for t in tasks],
                "claims": [t.claims for t in tasks],
                "worker": self._state.worker_id,
            },
        ).fetchall()
        return {row[0] for row in rows}

    async def release_held(self, timeout: float) -> int:
        """Hand in-flight tasks back at shutdown so another worker resumes them at once, and
        remove this worker's row: one transaction, waiting at most `timeout` for a connection.

        Only tasks still claimed by this worker are touched (RELEASE_TASKS): one the completer
        parked or finished meanwhile keeps what it committed. The attempts cut short are closed as
        `WorkerStopped`, which the poison-pill limit does not count. Returns how many were held.
        """
        worker_id = self._state.worker_id
        entries = list(self._state.held.values())
        self._state.held.clear()
        held = [entry.task for entry in entries]
        cut_short = [
            (entry.task.execution_id, key, attempt)
            for entry in entries
            if entry.execution is not None
            for key, attempt in entry.execution.in_flight.items()
        ]

        def release(conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.execute(sql.UNREGISTER_WORKER, {"id": worker_id})
                if not held:
                    return
                conn.execute(
                    sql.RELEASE_TASKS,
                    {
                        "ids": [t.id for t in held],
                        "claims": [t.claims for t in held],
                        "delays": [0.0] * len(held),
                        "events": [None] * len(held),
                        "branches": [False] * len(held),
                        "worker": worker_id,
                    },
                )  # ready at once: the statement wakes the other workers itself
                if cut_short:
                    conn.execute(
                        sql.STOP_ATTEMPTS,
                        {
                            "execution_ids": [row[0] for row in cut_short],
                            "step_keys": [row[1] for row in cut_short],
                            "attempts": [row[2] for row in cut_short],
                            "worker": worker_id,
                        },
                    )

        await self._db.run_quietly(release, timeout=timeout)
        return len(held)
