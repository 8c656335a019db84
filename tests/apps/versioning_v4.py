"""Version 1 of the `versioned` workflow (see versioning_v1) with its first step renamed, without a
patch: every execution recorded by an earlier version would diverge at its first entry."""

from __future__ import annotations

import zart

from .core_app import record_effect


@zart.step("versioned-prepare-v4")
def prepare(n: int) -> int:
    record_effect(n)
    return n


@zart.step("versioned-finish")
def finish(n: int) -> int:
    record_effect(n)
    return n * 10


@zart.workflow("versioned")
async def versioned(n: int) -> list:
    prepared = await prepare(n)
    await zart.wait_for_event("go")
    return [prepared, await finish(n)]
