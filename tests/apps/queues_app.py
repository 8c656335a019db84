"""Workflows in limited queues, for the flow-control tests (tests/test_queues.py).

Each test uses its own queue, so that one supervisor serves them all. The step records its side
effect, so the crash test can tell a checkpointed step that ran again from the one in flight.
"""

from __future__ import annotations

import trio

import zart

from .core_app import record_effect

three_at_once = zart.Queue("qt-three", concurrency=3)
per_tenant = zart.Queue("qt-tenants", concurrency=3, per_key=1)
fifty_a_second = zart.Queue("qt-rate", rate="50/1s")
one_at_a_time = zart.Queue("qt-single", concurrency=1)
two_at_once = zart.Queue("qt-pair", concurrency=2)
never_binding = zart.Queue("qt-wide", concurrency=1000)


@zart.step("qt-nap")
async def nap(ms: int) -> int:
    await trio.sleep(ms / 1000)
    await trio.to_thread.run_sync(record_effect, ms)
    return ms


@zart.workflow("qt-naps", queue=three_at_once)
async def naps(spec: dict) -> int:
    """`spec["steps"]` steps of `spec["ms"]` milliseconds each (one by default)."""
    total = 0
    for _ in range(spec.get("steps", 1)):
        total += await nap(spec["ms"])
    return total


@zart.workflow("qt-unqueued")
async def unqueued(spec: dict) -> int:
    return await nap(spec["ms"])


@zart.workflow("qt-timed", queue=one_at_a_time, timeout="1s")
async def timed(spec: dict) -> int:
    """A workflow whose timeout (1 s) is shorter than its wait in a busy queue."""
    return await nap(spec["ms"])
