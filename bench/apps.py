"""Trivial workflows for the benchmarks: the engine's own cost, with no work in the steps."""

from __future__ import annotations

import psycopg
import trio

import zart


@zart.step("bench-noop")
async def noop(i: int) -> int:
    return i


@zart.workflow("bench-steps")
async def bench_steps(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await noop(i)
    return total


@zart.workflow("bench-sleeper")
async def bench_sleeper(seconds: float) -> int:
    """A durable sleep, then one step: the step's start tells how late the sleep came due."""
    await zart.sleep("nap", seconds)
    return await noop(1)


@zart.workflow("bench-map")
async def bench_map(steps: int) -> int:
    """`steps` branch steps in one zart.map."""
    return sum(await zart.map(noop, range(steps)))


@zart.workflow("bench-pairs")
async def bench_pairs(steps: int) -> int:
    """`steps` branch steps in rounds of zart.parallel of two."""
    total = 0
    for i in range(0, steps, 2):
        total += sum(await zart.parallel(noop(i), noop(i + 1)))
    return total


@zart.step("bench-io")
async def io_wait(seconds: float) -> float:
    """A step that waits on I/O (a call to another service, say): it holds its slot, not the CPU."""
    await trio.sleep(seconds)
    return seconds


@zart.workflow("bench-io-steps")
async def bench_io_steps(spec: list) -> float:
    """`spec[0]` steps that each wait `spec[1]` seconds."""
    steps, seconds = spec
    total = 0.0
    for _ in range(steps):
        total += await io_wait(seconds)
    return total


@zart.workflow("bench-child")
async def bench_child(i: int) -> int:
    """A child of one no-op step: the unit of bench.children's round trip."""
    return await noop(i)


@zart.workflow("bench-children")
async def bench_children(children: int) -> int:
    """`children` child executions one after another, each a 1-step `bench-child`."""
    total = 0
    for i in range(children):
        total += await zart.child(bench_child, i)
    return total


# Transactional steps (bench.transactions): one UPDATE each, of a row spread by the execution's id
# over 10,000 counters (bench.transactions creates them), in the step's own transaction.
COUNTERS = 10_000


@zart.transaction("bench-tx-update")
def tx_update(conn: psycopg.Connection, i: int) -> int:
    conn.execute(
        "UPDATE bench_counters SET n = n + 1 WHERE id = (abs(hashtext(%s)) + %s) %% 10000",
        (zart.context().execution_id, i),
    )
    return i


@zart.workflow("bench-tx-steps")
async def bench_tx_steps(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await tx_update(i)
    return total
