"""Workflows for the parallel and durable-loop tests."""

from __future__ import annotations

import os
from pathlib import Path

import trio

import zart

from .core_app import _pool, record_effect


@zart.step("nap-300ms")
async def nap(label: str) -> str:
    await trio.sleep(0.3)
    await trio.to_thread.run_sync(record_effect, label)
    return f"{label} done in pid {os.getpid()}"


@zart.workflow("three-naps")
async def three_naps() -> list:
    return await zart.parallel(nap("a"), nap("b"), nap("c"))


@zart.step("quick")
def quick(label: str) -> str:
    record_effect(label)
    return label.upper()


@zart.step("gated-branch")
async def gated_branch(gate: str) -> str:
    await trio.to_thread.run_sync(record_effect, gate)
    while not Path(gate).exists():
        await trio.sleep(0.01)
    return "gate opened"


@zart.workflow("two-quick-one-gated")
async def two_quick_one_gated(payload: dict) -> list:
    return await zart.parallel(quick("a"), quick("b"), gated_branch(payload["gate"]))


@zart.step("process-item")
def process_item(item: dict) -> int:
    """A durable loop's body: records the raw effect, and an idempotent one keyed by the item."""
    record_effect(item["n"])
    key = zart.context().idempotency_key
    with _pool().connection() as conn:
        conn.execute(
            "INSERT INTO test_idempotent_effects (idempotency_key) VALUES (%s) ON CONFLICT DO NOTHING",
            (key,),
        )
    if item.get("slow"):
        import time

        time.sleep(item["slow"])
    return item["n"] * item["n"]


@zart.workflow("square-all")
async def square_all(payload: dict) -> list:
    items = [{"n": n, "slow": payload.get("slow", 0)} for n in range(payload["count"])]
    return await zart.map(process_item, items, concurrency=payload.get("concurrency"))


@zart.step("fan-out-start")
def fan_out_start() -> int:
    record_effect()
    return 10


@zart.step("branch-work")
def branch_work(index: int) -> int:
    record_effect(index)
    return index * 10


@zart.step("after-fan-in")
def after_fan_in(total: int) -> int:
    record_effect(total)
    return total


@zart.workflow("fan-out-ten")
async def fan_out_ten() -> int:
    width = await fan_out_start()
    results = await zart.parallel(*[branch_work(i) for i in range(width)])
    return await after_fan_in(sum(results))


@zart.step("maybe-fail")
def maybe_fail(label: str) -> str:
    record_effect(label)
    if label.startswith("bad"):
        raise LookupError(f"{label} cannot be found")
    return f"ok:{label}"


@zart.workflow("one-branch-fails")
async def one_branch_fails() -> dict:
    try:
        await zart.parallel(maybe_fail("x"), maybe_fail("bad-1"), maybe_fail("y"), maybe_fail("bad-2"))
    except zart.StepFailed as failure:
        return {"failed_key": failure.step_key, "message": failure.message, "outcomes": failure.outcomes}
    return {"failed_key": None}


@zart.workflow("loop-styles")
async def loop_styles(payload: dict) -> dict:
    """A plain for loop over step calls (keys quick#1, quick#2, ...) next to zart.map (quick[i])."""
    looped = [await quick(word) for word in payload["words"]]
    mapped = await zart.map(quick, payload["words"])
    return {"looped": looped, "mapped": mapped}


@zart.workflow("two-maps")
async def two_maps(payload: dict) -> list:
    return [await zart.map(quick, payload["words"]), await zart.map(quick, payload["words"])]


@zart.step("fails-once-branch", retry="fixed(3, 200ms)")
def fails_once_branch(label: str) -> str:
    """Fails its first attempt (counted in test_effects), then succeeds."""
    record_effect(label)
    with _pool().connection() as conn:
        tries = conn.execute(
            "SELECT count(*) FROM test_effects WHERE execution_id = %s AND step_key = %s",
            (zart.context().execution_id, zart.context().step_key),
        ).fetchone()[0]
    if tries < 2:
        raise RuntimeError(f"{label}: first attempt fails")
    return label.upper()


@zart.workflow("branch-retries-while-siblings-run")
async def branch_retries_while_siblings_run() -> list:
    return await zart.parallel(quick("a"), fails_once_branch("b"), nap("c"))
