"""Workflows for the stream tests (zart.emit)."""

from __future__ import annotations

from datetime import timedelta

import zart

from .core_app import record_effect


@zart.step("stream-group")
def stream_group(group: int) -> int:
    record_effect(group)
    return group


@zart.workflow("stream-counter")
async def stream_counter(payload: dict) -> int:
    """Emits 0..count-1 to stream 'numbers', a step after every `group` values, and an optional
    nap (a durable sleep) after every group to spread the values over time."""
    count, group = payload["count"], payload.get("group", 100)
    nap = payload.get("nap")
    for i in range(count):
        await zart.emit("numbers", i)
        if (i + 1) % group == 0:
            await stream_group(i // group)
            if nap:
                await zart.sleep(f"nap-{i // group}", timedelta(seconds=nap))
    return count


@zart.workflow("stream-then-wait")
async def stream_then_wait(payload: dict) -> list:
    """Emits each value it is sent as event 'value', until the event 'stop'; for live readers."""
    sent = []
    while True:
        value = await zart.wait_for_event("value")
        if value == "stop":
            return sent
        await zart.emit("live", value)
        sent.append(value)


@zart.workflow("stream-bad")
async def stream_bad(payload: dict) -> str:
    """Emits what `payload` says is wrong; returns the error it got."""
    try:
        if payload["case"] == "name":
            await zart.emit("bad\nname", 1)
        elif payload["case"] == "empty":
            await zart.emit("", 1)
        elif payload["case"] == "value":
            await zart.emit("ok", {1, 2})
        elif payload["case"] == "nan":
            await zart.emit("ok", float("nan"))
    except (TypeError, ValueError, zart.SerializationError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


@zart.workflow("stream-two")
async def stream_two() -> int:
    await zart.emit("a", "a1")
    await zart.emit("b", {"b": 1})
    await zart.emit("a", "a2")
    await stream_group(0)
    return 2


@zart.step("emit-in-step", retry=None)
async def emit_in_step() -> None:
    await zart.emit("from-step", 1)  # not a workflow: ZartError


@zart.workflow("stream-from-step")
async def stream_from_step() -> str:
    try:
        await emit_in_step()
    except zart.StepFailed as failed:
        return failed.message
    return "no error"


@zart.workflow("stream-progress")
async def stream_progress(steps: int) -> int:
    """Emits {"done", "of"} to `progress` after each of `steps` short sleeps: a page follows it live."""
    for done in range(1, steps + 1):
        await zart.sleep("tick", "50ms")
        await zart.emit("progress", {"done": done, "of": steps})
    return steps
