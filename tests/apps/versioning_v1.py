"""Version 1 of the `versioned` workflow (tests/test_replay_check.py): prepare, wait for `go`, finish.

Versions 1, 2 and 3 are the same workflow and steps (the same names) as three deploys of its code: a
process imports one of them.
"""

from __future__ import annotations

import zart

from .core_app import record_effect


@zart.step("versioned-prepare")
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
