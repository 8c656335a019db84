"""Where a request waits on PostgreSQL: lanes, each with its own threads, connections and time limits.

A request that needs the database runs its blocking client code in a thread, on a pooled connection.
Requests are split into lanes so that one kind cannot starve another: writes (start, event, cancel)
lock an execution's task row and so may wait on a worker that holds it; reads (get, list) take no row
lock; the health check has a lane of its own, so that it answers while the others are full. Each lane
has its own pool, whose connections carry `lock_timeout` and `statement_timeout`: a request waits on
PostgreSQL a bounded time, then answers 503 `timeout`. A request that finds its lane full waits for a
free thread at most `QUEUE_WAIT` seconds, behind at most `MAX_WAITING` others, then answers 503 `busy`:
there is no unbounded queue.

Starts have a lane of their own, `start`: a start that needs nothing read first joins the process's
group commit (zart.group_start) and waits without a thread or a connection, so its lane bounds how
many wait at once (`START_SLOTS`), not threads; many concurrent starts then share each commit.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from .. import db
from .errors import busy

if TYPE_CHECKING:
    from starlette.requests import Request

# Threads of a read or write lane: the size of the pool `pools.shared_pool` opens for its URL, so that
# a thread never waits for a connection.
LANE_THREADS = 8
HEALTH_THREADS = 2
# Starts waiting in the group commit at once: enough for a group per commit of the size that pays
# (tens to hundreds), few enough that a flood is answered `busy` rather than queued without bound.
START_SLOTS = 256
QUEUE_WAIT = 1.0
MAX_WAITING = 128
# The health check's own limits: short, since a load balancer asks often and acts on a slow answer.
HEALTH_STATEMENT_TIMEOUT = 1.0
HEALTH_POOL_WAIT = 2.0


@attrs.frozen
class Lane:
    """One kind of request: the database URL of its pool (with its session settings) and its threads."""

    name: str
    url: str = attrs.field(repr=False)
    threads: int  # requests in flight at once (threads, or for `start` waiters of the group commit)

    def limiter(self) -> anyio.CapacityLimiter:
        """The lane's slots; made inside the server's event loop (a limiter belongs to one loop)."""
        return anyio.CapacityLimiter(self.threads)


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def lanes(database_url: str, lock_timeout: float, statement_timeout: float) -> dict[str, Lane]:
    """The lanes of one server process: `read`, `write`, `start` and `health`."""

    def lane(name: str, threads: int, lock: float, statement: float) -> Lane:
        settings = {"lock_timeout": _milliseconds(lock), "statement_timeout": _milliseconds(statement)}
        return Lane(name, db.with_session_settings(database_url, f"zart-api-{name}", settings), threads)

    health = min(HEALTH_STATEMENT_TIMEOUT, statement_timeout)
    write = lane("write", LANE_THREADS, lock_timeout, statement_timeout)
    return {
        "read": lane("read", LANE_THREADS, lock_timeout, statement_timeout),
        "write": write,
        # the write lane's pool (its time limits), reached through the group commit's flusher
        "start": Lane("start", write.url, START_SLOTS),
        "health": lane("health", HEALTH_THREADS, health, health),
    }


@asynccontextmanager
async def lane_slot(lane: Lane, limiter: anyio.CapacityLimiter) -> AsyncIterator[None]:
    """A free slot of the lane, held for the block; 503 `busy` if none comes soon."""
    try:
        limiter.acquire_nowait()  # the common case: a free slot, taken without a timer
    except anyio.WouldBlock:
        full = busy(
            f"the server is at capacity ({lane.threads} {lane.name} requests in flight); try again shortly"
        )
        if limiter.statistics().tasks_waiting >= MAX_WAITING:
            raise full from None
        with anyio.move_on_after(QUEUE_WAIT) as waited:
            await limiter.acquire()
        if waited.cancelled_caught:
            raise full from None
    try:
        yield
    finally:
        limiter.release()


async def run_in_lane(lane: Lane, limiter: anyio.CapacityLimiter, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a thread once the lane has a free slot; 503 `busy` if none comes soon."""
    async with lane_slot(lane, limiter):
        # anyio's default thread limiter (40) never binds here: the thread lanes' slots add up to fewer.
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))


async def await_in_lane(
    lane: Lane, limiter: anyio.CapacityLimiter, fn: Callable[..., Awaitable[Any]], *args: Any
) -> Any:
    """Await `fn(*args)` in the server's loop once the lane has a free slot (the `start` lane)."""
    async with lane_slot(lane, limiter):
        return await fn(*args)


async def in_thread(request: Request, lane: str, fn: Callable[[str], Any]) -> Any:
    """The one hop of a request to a thread of its lane, where `fn(url of the lane's pool)` runs."""
    state = request.app.state
    chosen = state.lanes[lane]
    return await run_in_lane(chosen, state.limiters[lane], fn, chosen.url)
