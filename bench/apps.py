"""Trivial workflows for the benchmarks: the engine's own cost, with no work in the steps."""

from __future__ import annotations

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
