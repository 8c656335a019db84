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
