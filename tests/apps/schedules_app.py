"""Workflows that run every second, one per catch-up policy (tests/test_schedules.py)."""

from __future__ import annotations

import zart


@zart.workflow("tick-latest", schedule="* * * * * *")
async def tick_latest(fired_at: str) -> str:
    return fired_at


@zart.workflow("tick-all", schedule="* * * * * *", catch_up="all")
async def tick_all(fired_at: str) -> str:
    return fired_at


@zart.workflow("tick-none", schedule="* * * * * *", timezone="Europe/Berlin", catch_up="none")
async def tick_none(fired_at: str) -> str:
    return fired_at
