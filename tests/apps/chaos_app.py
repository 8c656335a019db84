"""A 3-step workflow whose steps take a little time, for supervisor and chaos tests.

The steps record their effects in the database under test, so when the chaos restarts PostgreSQL a
step can fail like any step whose dependency blips: they retry, as production steps would.
"""

from __future__ import annotations

import trio

import zart

from .core_app import record_effect


@zart.step("chaos-a", retry="fixed(10, 200ms)")
async def chaos_a(n: int) -> int:
    await trio.sleep(0.02)
    await trio.to_thread.run_sync(record_effect, n)
    return n + 1


@zart.step("chaos-b", retry="fixed(10, 200ms)")
def chaos_b(n: int) -> int:
    record_effect(n)
    return n * 2


@zart.step("chaos-c", retry="fixed(10, 200ms)")
async def chaos_c(n: int) -> int:
    await trio.sleep(0.02)
    await trio.to_thread.run_sync(record_effect, n)
    return n - 1


@zart.workflow("chaos")
async def chaos(n: int) -> int:
    return await chaos_c(await chaos_b(await chaos_a(n)))
