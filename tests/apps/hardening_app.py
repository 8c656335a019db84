"""Workflows of the hardening tests: hostile values, crashing steps, shutdowns mid-commit.

Steps record their side effects in `test_effects` (see core_app.record_effect), so a test counts how
many times a step's body really ran.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import trio

import zart

from .core_app import record_effect


class UnprintableError(Exception):
    """An exception whose text cannot even be produced."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _poison(kind: str) -> BaseException | None:
    if kind == "nul":
        return ValueError("customer note: 'abc\x00def'")
    if kind == "surrogate":
        return ValueError("cannot parse " + os.fsdecode(b"caf\xe9.csv"))  # a latin-1 file name
    if kind == "unprintable":
        return UnprintableError()
    return None


@zart.step("until")
async def until(at: float, poison: str) -> str:
    """Runs until wall-clock time `at`, so that many executions finish it in the same batch."""
    await trio.to_thread.run_sync(record_effect)
    await trio.sleep(max(0.0, at - time.time()))
    error = _poison(poison)
    if error is not None:
        raise error
    return "ok"


@zart.step("after")
async def after() -> str:
    return "done"


@zart.workflow("batchmate")
async def batchmate(arg: dict) -> str:
    try:
        await until(arg["at"], arg["poison"])
    except zart.StepFailed as failed:
        return f"caught {failed.error_type}: {failed.message}"
    return await after()


@zart.workflow("long-sleeper")
async def long_sleeper(arg: dict) -> str:
    await until(arg["at"], "")
    await zart.sleep("renewal", arg["duration"])  # e.g. a user-chosen reminder delay
    return "woke"


@zart.step("surrogate-retried", retry="fixed(2, 10ms)")
async def surrogate_retried() -> None:
    await trio.to_thread.run_sync(record_effect)
    raise ValueError("cannot parse " + os.fsdecode(b"caf\xe9.csv"))


@zart.workflow("surrogate-retry")
async def surrogate_retry() -> str:
    await surrogate_retried()
    return "unreachable"


@zart.step("hardening-tick")
async def tick(i: int) -> int:
    return i + 1


@zart.workflow("hardening-many-steps")
async def many_steps(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await tick(x)
    return x


# -- shutdown while a park is being committed -----------------------------------------------------

held_locks: dict[str, psycopg.Connection] = {}


@zart.step("grab-lock")
def grab_lock() -> None:
    """Holds back the completer's next batch (the park) until the test commits this lock."""
    conn = psycopg.connect(os.environ["ZART_TEST_EFFECTS_URL"])
    conn.execute("LOCK TABLE zart_tasks IN SHARE ROW EXCLUSIVE MODE")
    held_locks[zart.context().execution_id] = conn


@zart.step("branch")
async def branch(i: int) -> int:
    return i


@zart.workflow("park-at-stop")
async def park_at_stop(kind: str) -> object:
    await grab_lock()
    if kind == "sleep":
        await zart.sleep("nap", "1h")
        return "slept"
    return await zart.parallel(branch(1), branch(2))


# -- fan-out ------------------------------------------------------------------------------------


@zart.step("item")
async def item(i: int) -> int:
    await trio.sleep(0.05)
    await trio.to_thread.run_sync(record_effect, i)
    return i * i


@zart.workflow("mapper")
async def mapper(n: int) -> int:
    return sum(await zart.map(item, list(range(n)), concurrency=4))


@zart.step("map-square")
async def square(i: int) -> int:
    return i * i


@zart.workflow("map-n")
async def map_n(n: int) -> int:
    return sum(await zart.map(square, list(range(n)), concurrency=50))


@zart.step("long-branch")
async def long_branch(i: int) -> int:
    await trio.sleep(30)
    return i


@zart.workflow("fan-timeout", timeout="1s")
async def fan_timeout() -> list:
    return await zart.parallel(long_branch(1), long_branch(2))


# -- a step that takes its worker down -----------------------------------------------------------


@zart.step("crash-worker")
def crash_worker() -> None:
    record_effect()
    os.kill(os.getpid(), signal.SIGKILL)


@zart.workflow("poison-pill")
async def poison_pill() -> str:
    await crash_worker()
    return "unreachable"


@zart.workflow("bystander")
async def bystander() -> int:
    return await tick(1)


@zart.step("slow-step")
async def slow_step() -> str:
    await trio.sleep(30)
    return "slow"


@zart.workflow("slow")
async def slow() -> str:
    return await slow_step()


@zart.workflow("bad-sleep-name")
async def bad_sleep_name(name: str) -> str:
    await zart.sleep(name, "1s")
    return "slept"
