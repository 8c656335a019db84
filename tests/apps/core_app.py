"""Workflows the core tests run, in-process and in `zart worker --app tests.apps.core_app`.

Each step records its side effect as a row in `test_effects` (through its own connection), so a
test can count how many times a step's body really ran.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
from pathlib import Path

import orjson
import trio
from psycopg_pool import ConnectionPool

import zart

_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool() -> ConnectionPool:
    """A small pool on the database the effects go to (steps may run in hundreds of threads).

    In-process tests point ZART_TEST_EFFECTS_URL at their database; worker subprocesses use the
    database they work on.
    """
    url = os.environ.get("ZART_TEST_EFFECTS_URL") or os.environ["ZART_DATABASE_URL"]
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            pool = _pools[url] = ConnectionPool(
                url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True
            )
        return pool


def record_effect(value: object = None) -> None:
    ctx = zart.context()
    with _pool().connection() as conn:
        conn.execute(
            "INSERT INTO test_effects (execution_id, step_key, pid, value) VALUES (%s, %s, %s, %s)",
            (ctx.execution_id, ctx.step_key, os.getpid(), orjson.dumps(value).decode()),
        )


@zart.step("add-one")
def add_one(x: int) -> int:
    record_effect(x)
    return x + 1


@zart.step("double")
async def double(x: int) -> int:
    await trio.to_thread.run_sync(record_effect, x)
    return x * 2


@zart.step("describe")
def describe(x: int) -> dict:
    record_effect(x)
    return {"value": x, "context": zart.context().idempotency_key}


@zart.workflow("three-steps")
async def three_steps(payload: dict) -> dict:
    a = await add_one(payload["n"])
    b = await double(a)
    return await describe(b)


@zart.step("wait-for-gate")
async def wait_for_gate(path: str) -> str:
    """Blocks until the test creates the file at `path`: a step the test can crash in."""
    await trio.to_thread.run_sync(record_effect, path)
    while not Path(path).exists():
        await trio.sleep(0.01)
    return "opened"


@zart.workflow("gated")
async def gated(payload: dict) -> list:
    """step 1, then a step that blocks on the gate file, then step 3."""
    if os.environ.get("ZART_TEST_SWAP_ORDER") == "1":  # "new code" with its steps re-ordered
        b = await double(payload["n"])
        a = await add_one(payload["n"])
    else:
        a = await add_one(payload["n"])
        b = await double(payload["n"])
    gate = await wait_for_gate(payload["gate"])
    c = await describe(a + b)
    return [a, b, gate, c["value"]]


@zart.workflow("gated-echo")
async def gated_echo(payload: dict) -> object:
    """Returns payload["value"] once the gate file exists."""
    await wait_for_gate(payload["gate"])
    return payload["value"]


@zart.step("gc-settings")
def gc_settings() -> list:
    """The worker process's garbage collector settings: thresholds, objects frozen."""
    return [list(gc.get_threshold()), gc.get_freeze_count()]


@zart.workflow("gc-settings")
async def gc_settings_of_the_worker() -> list:
    return await gc_settings()


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str
    tags: list


@zart.step("make-point")
def make_point() -> Point:
    record_effect()
    return Point(1, 2.5, "é", ["b", "a"])


@zart.step("observe")
def observe(value: object) -> str:
    """Records what the workflow passed, with its Python type, as JSON."""
    record_effect({"type": type(value).__name__, "value": value})
    return type(value).__name__


@zart.workflow("dataclass-replay")
async def dataclass_replay(payload: dict) -> dict:
    point = await make_point()
    await observe(point)
    await wait_for_gate(payload["gate"])
    await observe(point)
    return {"point": point, "type": type(point).__name__}


@zart.workflow("no-input")
async def no_input() -> str:
    return "nothing needed"


@zart.workflow("fails")
async def fails(payload: dict) -> None:
    await add_one(1)
    raise RuntimeError(f"boom: {payload['why']}")


@zart.step("explode")
def explode() -> None:
    record_effect()
    raise KeyError("missing-thing")


@zart.workflow("catches")
async def catches(payload: dict) -> dict:
    try:
        await explode()
    except zart.StepFailed as failure:
        return {"caught": failure.error_type, "message": failure.message}
    return {"caught": None}


@zart.workflow("bad-step-argument")
async def bad_step_argument(payload: dict) -> None:
    await observe(object())


@zart.workflow("bad-result")
async def bad_result(payload: dict) -> object:
    return {1, 2, 3}


@zart.step("measure")
def measure() -> dict:
    return {"ratio": float("nan")}


@zart.workflow("nan-step-result")
async def nan_step_result(payload: dict) -> dict:
    return await measure()


@zart.step("stall-once")
async def stall_once(marker: str) -> str:
    """On its first attempt, blocks the worker's event loop (a blocking call in an async step, the
    mistake the watchdog exists for) for far longer than any test; on a later one, returns."""
    await trio.to_thread.run_sync(record_effect, marker)
    if not Path(marker).exists():
        Path(marker).touch()
        time.sleep(600)  # on purpose: the watchdog must find the loop stuck
    return "went on"


@zart.workflow("stalls-once")
async def stalls_once(payload: dict) -> list:
    """A step, a durable sleep (the worker idle but healthy), then a step whose first attempt
    blocks the worker's loop for good."""
    a = await add_one(payload["n"])
    await zart.sleep("nap", payload["nap"])
    return [a, await stall_once(payload["marker"])]
