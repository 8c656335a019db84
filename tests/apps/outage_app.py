"""Workflows for the outage tests: long ones that are in flight when the database goes away, and a
one-step one whose completion after the database's return is timed. No step touches the database,
so the outage reaches the engine only (its checkpoints, claims, leases and LISTEN connection)."""

from __future__ import annotations

import trio

import zart


@zart.step("tick")
async def tick(i: int) -> int:
    await trio.sleep(0.05)
    return i + 1


@zart.workflow("ticks")
async def ticks(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await tick(x)
    return x


@zart.step("pong")
async def pong(x: int) -> int:
    return x


@zart.workflow("ping")
async def ping(x: int) -> int:
    return await pong(x)
