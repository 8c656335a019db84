"""The listener: wakes the claimer when a task became ready somewhere (`NOTIFY zart_tasks`).

Notifications are hints: without them the claimer still looks at the earliest future `run_at` and
at every poll interval, so a lost connection only costs latency until it is back. The connection is
never used from a thread: the trio loop waits on its socket (`trio.lowlevel.wait_readable`) and
drains notifications with libpq's non-blocking `consume_input()` / `notifies()`.
"""

from __future__ import annotations

import logging
from functools import partial

import psycopg
import trio

from . import sql
from .db import connect
from .errors import DatabaseUnavailable
from .logs import log_event
from .workerstate import DB_RETRY_SECONDS, WorkerState

log = logging.getLogger("zart.worker")

# A lost connection is retried after this long at first, the delay doubling up to DB_RETRY_SECONDS:
# a short blip costs little.
_FIRST_RETRY_SECONDS = 0.1


class Listener:
    """One worker's LISTEN connection, and its reconnection."""

    def __init__(self, state: WorkerState, database_url: str) -> None:
        self._state = state
        self._database_url = database_url

    async def run(self) -> None:
        """Set the wake-up event whenever a NOTIFY arrives; reconnect if the connection drops.

        Reconnection retries every failure to reach the database (a lost connection, a refused or
        failed connect: `DatabaseUnavailable`) for as long as the outage lasts, with a back-off
        capped at `DB_RETRY_SECONDS`, so the worker hears notifications again within about a
        second of the database's return. A configuration error (the database or role gone, the
        password changed) is not an outage: it ends the worker.
        """
        state = self._state
        lost = False
        delay = _FIRST_RETRY_SECONDS
        while True:
            conn: psycopg.Connection | None = None
            try:
                conn = await trio.to_thread.run_sync(partial(connect, self._database_url))
                conn.execute(f"LISTEN {sql.TASKS_CHANNEL}")
                if lost:
                    log_event(log, "listen.reconnected", worker=state.worker_id)
                    lost, delay = False, _FIRST_RETRY_SECONDS
                state.wake_claimer()  # anything that happened while we were not listening
                while True:
                    await trio.lowlevel.wait_readable(conn.fileno())
                    conn.pgconn.consume_input()
                    got = False
                    while conn.pgconn.notifies() is not None:
                        got = True
                    if got:
                        state.wake_claimer()
            except (psycopg.Error, OSError, DatabaseUnavailable) as exc:
                if not lost:
                    log_event(log, "listen.lost", logging.WARNING, worker=state.worker_id, error=exc)
                    lost = True
                await trio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_SECONDS)
            finally:
                if conn is not None:
                    conn.close()
