"""Workflows for the durable sleep and event tests."""

from __future__ import annotations

from datetime import timedelta

import zart

from .core_app import record_effect


@zart.step("before-sleep")
def before_sleep() -> str:
    record_effect()
    return "before"


@zart.step("after-sleep")
def after_sleep() -> str:
    record_effect()
    return "after"


@zart.workflow("sleeper")
async def sleeper(payload: dict) -> list:
    first = await before_sleep()
    await zart.sleep("nap", timedelta(seconds=payload["seconds"]))
    second = await after_sleep()
    return [first, second]


@zart.workflow("wait-for-one")
async def wait_for_one(payload: dict) -> object:
    timeout = payload.get("timeout")
    try:
        return await zart.wait_for_event(payload.get("event", "go"), timeout=timeout)
    except zart.EventTimeout as timed_out:
        return {"timed_out": str(timed_out)}


@zart.workflow("wait-for-two")
async def wait_for_two() -> list:
    first = await zart.wait_for_event("item")
    await before_sleep()
    second = await zart.wait_for_event("item")
    return [first, second]


@zart.step("count-release")
def count_release(payload: object) -> object:
    record_effect(payload)
    return payload


@zart.workflow("released-by-event")
async def released_by_event() -> object:
    payload = await zart.wait_for_event("release")
    return await count_release(payload)
