"""Workflows for the child-workflow tests (zart.child, zart.map over a workflow)."""

from __future__ import annotations

from pathlib import Path

import trio

import zart

from .core_app import record_effect


@zart.step("child-square")
async def square(n: int) -> int:
    await trio.to_thread.run_sync(record_effect, n)
    return n * n


@zart.step("child-slow-square")
async def slow_square(n: int) -> int:
    """A step slow enough (200 ms) that a SIGKILL finds children in flight."""
    await trio.to_thread.run_sync(record_effect, n)
    await trio.sleep(0.2)
    return n * n


@zart.workflow("square-child")
async def square_child(n: int) -> int:
    return await square(n)


@zart.workflow("slow-square-child")
async def slow_square_child(n: int) -> int:
    first = await slow_square(n)
    return first + await square(0)


@zart.workflow("sum-of-squares")
async def sum_of_squares(payload: dict) -> int:
    """The acceptance parent: one child per item, at most `concurrency` at once, their sum."""
    results = await zart.map(slow_square_child, range(payload["n"]), concurrency=payload["concurrency"])
    return sum(results)


@zart.step("child-fail-always", retry=zart.Retry.none())
def fail_always(reason: str) -> None:
    raise RuntimeError(reason)


@zart.workflow("failing-child")
async def failing_child(reason: str) -> None:
    await fail_always(reason)


@zart.workflow("catches-child-failure")
async def catches_child_failure(reason: str) -> dict:
    try:
        await zart.child(failing_child, reason)
    except zart.ChildFailed as failed:
        return {
            "caught": failed.error_type,
            "child": failed.child_id,
            "status": failed.child_status,
            "message": failed.message,
        }
    return {"caught": None}


@zart.workflow("one-child")
async def one_child(n: int) -> dict:
    before = await square(n)
    child = await zart.child(square_child, n + 1)
    return {"before": before, "child": child}


@zart.workflow("mixed-parallel")
async def mixed_parallel(n: int) -> list:
    return await zart.parallel(square(n), zart.child(square_child, n + 1), zart.child(square_child, n + 2))


@zart.workflow("event-waiting-child")
async def event_waiting_child(name: str) -> object:
    return await zart.wait_for_event(name)


@zart.workflow("parent-of-waiters")
async def parent_of_waiters(count: int) -> list:
    """Children that wait for an event forever, and a grandchild under the first."""
    return await zart.parallel(*(zart.child(waiting_tree, level) for level in range(count)))


@zart.workflow("waiting-tree")
async def waiting_tree(level: int) -> object:
    if level == 0:
        return await zart.child(event_waiting_child, "never")
    return await zart.wait_for_event("never")


@zart.workflow("named-child")
async def named_child(payload: dict) -> int:
    return await zart.child(square_child, payload["n"], id=payload["id"])


@zart.workflow("impatient-parent", timeout="1s")
async def impatient_parent() -> object:
    """Times out while its child waits for an event that never comes: the child is cancelled."""
    return await zart.child(event_waiting_child, "never")


@zart.step("child-gate")
async def child_gate(payload: dict) -> int:
    """Records its attempt, then waits for the gate file: a SIGKILL finds it in flight."""
    await trio.to_thread.run_sync(record_effect, payload["n"])
    while not Path(payload["gate"]).exists():
        await trio.sleep(0.01)
    return payload["n"]


@zart.workflow("gated-child")
async def gated_child(payload: dict) -> int:
    squared = await square(payload["n"])
    return squared + await child_gate(payload)


@zart.workflow("three-gated-children")
async def three_gated_children(gate: str) -> list:
    """Three children its worker runs at once (no window, default queue), each stopped at a gate."""
    return await zart.parallel(*(zart.child(gated_child, {"n": n, "gate": gate}) for n in range(3)))


@zart.step("child-needs-file", retry=zart.Retry.none())
def needs_file(path: str) -> str:
    """Fails until the file exists: a bug fixed by creating it, then `zart resume`."""
    if not Path(path).exists():
        raise FileNotFoundError(path)
    return Path(path).read_text()


@zart.workflow("file-reading-child")
async def file_reading_child(path: str) -> str:
    return await needs_file(path)


@zart.workflow("parent-of-a-file-reader")
async def parent_of_a_file_reader(path: str) -> str:
    return "read: " + await zart.child(file_reading_child, path)


@zart.step("child-slow-step")
async def slow_step(seconds: float) -> float:
    await trio.sleep(seconds)
    return seconds


@zart.workflow("slow-child")
async def slow_child(seconds: float) -> float:
    """Runs longer than its parent waits in memory (1 s): the parent parks, and the end wakes it."""
    return await slow_step(seconds)


@zart.workflow("sleepy-child")
async def sleepy_child(seconds: float) -> str:
    """Sleeps durably: its run ends, the parent parks; another run ends it and wakes the parent."""
    await zart.sleep("nap", seconds)
    return "rested"


@zart.workflow("patient-parent")
async def patient_parent(payload: dict) -> list:
    return await zart.parallel(
        zart.child(slow_child, payload["slow"]), zart.child(sleepy_child, payload["sleep"])
    )
