"""The listener: wakes the claimer when a task became ready somewhere (`NOTIFY zart_tasks`).

Notifications are hints: without them the claimer still looks at the earliest future `run_at` and
at every poll interval, so a lost connection only costs latency until it is back. The connection is
never used from a thread: the trio loop waits on its socket (`trio.lowlevel.wait_readable`) and
drains notifications with libpq's non-blocking `consume_input()` / `notifies()`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import psycopg
import trio

from . import sql
from .db import connect
from .errors import DatabaseUnavailable
from .logs import log_event
from .wake_routing import Forwarder
from .workerstate import DB_RETRY_SECONDS, WorkerState

log = logging.getLogger("zart.worker")

# A lost connection is retried after this long at first, the delay doubling up to DB_RETRY_SECONDS:
# a short blip costs little.
_FIRST_RETRY_SECONDS = 0.1


class Listener:
    """One worker's LISTEN connection, and its reconnection."""

    def __init__(
        self,
        state: WorkerState,
        database_url: str,
        forward: Callable[[str], Awaitable[None]] | None = None,
        read_groups: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._state = state
        self._database_url = database_url
        # Sends a notification on to the next group (zart.wake_routing), when this worker's group
        # heard one first and has no room.
        self._forward = forward
        # Reads the live groups again (at each (re)connection, and when told they changed).
        self._read_groups = read_groups

    async def run(self) -> None:
        """Set the wake-up event whenever a NOTIFY arrives; reconnect if the connection drops.

        Reconnection retries every failure to reach the database (a lost connection, a refused or
        failed connect: `DatabaseUnavailable`) for as long as the outage lasts, with a back-off
        capped at `DB_RETRY_SECONDS`, so the worker hears notifications again within about a
        second of the database's return. A configuration error (the database or role gone, the
        password changed) is not an outage: it ends the worker.
        """
        if self._forward is None:
            await self._listen(None)
            return
        forwarder = Forwarder(self._forward)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarder.run)
            await self._listen(forwarder)

    async def _listen(self, forwarder: Forwarder | None) -> None:
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
                if state.router is not None:
                    state.router.stale = True  # who joined or left while we were not listening
                    await self._refresh_groups()
                while True:
                    await trio.lowlevel.wait_readable(conn.fileno())
                    conn.pgconn.consume_input()
                    got = False
                    while (notify := conn.pgconn.notifies()) is not None:
                        if state.router is None:
                            got = True
                            continue
                        wake, forward = state.router.hear(notify.extra.decode(errors="replace"))
                        got = got or wake
                        if forward is not None and forwarder is not None:
                            forwarder.offer(forward)
                    if got:
                        state.wake_claimer()
                    await self._refresh_groups()
            except (psycopg.Error, OSError, DatabaseUnavailable) as exc:
                if not lost:
                    log_event(log, "listen.lost", logging.WARNING, worker=state.worker_id, error=exc)
                    lost = True
                await trio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_SECONDS)
            finally:
                if conn is not None:
                    conn.close()

    async def _refresh_groups(self) -> None:
        router = self._state.router
        if router is not None and router.stale and self._read_groups is not None:
            await self._read_groups()
