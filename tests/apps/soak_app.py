"""The soak's workflow (bench/soak.py): steps, a retry, a sleep, an event, zart.parallel, zart.map
over steps and over child workflows, and a child workflow, chosen by the input's number.

Every step records each run of its body in `test_effects` (tests.apps.core_app.record_effect), so
the soak can count the steps that ran more than once. Those writes go to the database under test,
which the soak restarts and fails over: the steps retry, as production steps whose dependency blips
would. `expected(n)` is the result the workflow must return.
"""

from __future__ import annotations

import trio

import zart

from .core_app import record_effect

RETRY = "fixed(20, 250ms)"  # 5 s of tries: longer than a restart or a failover of the database


def needs_event(n: int) -> bool:
    return n % 10 == 1


async def _record(value: object) -> None:
    await trio.to_thread.run_sync(record_effect, value)


@zart.step("soak-first", retry=RETRY)
async def first(n: int) -> int:
    await trio.sleep(0.01)
    await _record(n)
    return n + 1


@zart.step("soak-flaky", retry=RETRY)
def flaky(n: int) -> int:
    """Fails its first attempt for one input in four (a retry by design, before any side effect)."""
    if n % 4 == 0 and zart.context().attempt == 1:
        raise RuntimeError(f"soak-flaky fails its first attempt for {n}")
    record_effect(n)
    return n * 2


@zart.step("soak-left", retry=RETRY)
async def left(n: int) -> int:
    await _record(n)
    return n + 10


@zart.step("soak-right", retry=RETRY)
def right(n: int) -> int:
    record_effect(n)
    return n + 20


@zart.step("soak-item", retry=RETRY)
async def item(n: int) -> int:
    await _record(n)
    return n * n


@zart.step("soak-child-step", retry=RETRY)
async def child_step(n: int) -> int:
    await _record(n)
    return n + 100


@zart.step("soak-last", retry=RETRY)
def last(total: int) -> int:
    record_effect(total)
    return total


@zart.workflow("soak-child")
async def soak_child(n: int) -> int:
    x = await child_step(n)
    if n % 2 == 0:
        await zart.sleep("child-nap", "300ms")
    return await child_step(x)


@zart.workflow("soak")
async def soak(n: int) -> dict:
    total = await first(n)
    total += await flaky(n)
    if n % 5 == 0:
        await zart.sleep("nap", "1s")
    if needs_event(n):
        total += (await zart.wait_for_event("go"))["add"]
    total += sum(await zart.parallel(left(n), right(n)))
    if n % 3 == 0:
        total += sum(await zart.map(item, [n, n + 1, n + 2]))
    if n % 7 == 0:
        total += await zart.child(soak_child, n)
    if n % 50 == 0:
        total += sum(await zart.map(soak_child, [n, n + 1], concurrency=2))
    return {"n": n, "total": await last(total)}


def expected(n: int) -> dict:
    """What `soak(n)` returns (the event's payload is {"add": n})."""
    total = (n + 1) + n * 2
    if needs_event(n):
        total += n
    total += (n + 10) + (n + 20)
    if n % 3 == 0:
        total += sum(i * i for i in (n, n + 1, n + 2))
    if n % 7 == 0:
        total += n + 200
    if n % 50 == 0:
        total += (n + 200) + (n + 1 + 200)
    return {"n": n, "total": total}


def children(n: int) -> int:
    """How many child executions `soak(n)` starts."""
    return (n % 7 == 0) + 2 * (n % 50 == 0)
