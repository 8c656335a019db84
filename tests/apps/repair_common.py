"""What the repair apps share (tests/test_operating.py): five steps, the third of which the
"buggy" version (repair_v1) gets wrong and the "fixed" one (repair_v2) right, plus a gated step
and a sleeper. Each app module registers the workflows with its own third step; a worker imports
one of them, as a deployment would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import zart

from .core_app import record_effect


@zart.step("repair-a")
def repair_a(n: int) -> int:
    record_effect(n)
    return n + 1


@zart.step("repair-b")
def repair_b(n: int) -> int:
    record_effect(n)
    return n * 2


@zart.step("repair-d")
def repair_d(n: int) -> int:
    record_effect(n)
    return n + 100


@zart.step("repair-e")
def repair_e(n: int) -> int:
    record_effect(n)
    return n * 10


@zart.step("repair-slow")
async def repair_slow(gate: str) -> str:
    """Blocks until the test creates the file `gate`: a long step the test pauses during."""
    await trio.to_thread.run_sync(record_effect, gate)
    while not Path(gate).exists():
        await trio.sleep(0.01)
    return "opened"


def register(third: Callable[[int], Awaitable[int]]) -> None:
    """The workflows, with this version's third step."""

    @zart.workflow("repair-five")
    async def repair_five(n: int) -> int:
        a = await repair_a(n)
        b = await repair_b(a)
        c = await third(b)
        d = await repair_d(c)
        return await repair_e(d)

    @zart.workflow("repair-gated")
    async def repair_gated(payload: dict[str, Any]) -> list[Any]:
        first = await repair_a(payload["n"])
        slow = await repair_slow(payload["gate"])
        last = await repair_b(first)
        return [first, slow, last]

    @zart.workflow("repair-sleeper")
    async def repair_sleeper(payload: dict[str, Any]) -> int:
        first = await repair_a(payload["n"])
        await zart.sleep("nap", payload["seconds"])
        return await repair_b(first)
