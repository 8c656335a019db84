"""A workflow whose code the tests change under executions in flight, for `zart.patched` and
`zart.deprecate_patch` (tests/test_patches.py).

`CODE["version"]` is the deploy: the in-process worker runs version 1 (no patch), 2 (a step added
behind `zart.patched`) or 3 (the old branch removed, `zart.deprecate_patch`), and a test switches it
while executions are parked in an event wait. Only for in-process workers: the version is this
process's.
"""

from __future__ import annotations

import zart

from .core_app import record_effect

CODE = {"version": 1}


@zart.step("patching-prepare")
def prepare() -> str:
    record_effect()
    return "prepared"


@zart.step("patching-added")
def added() -> str:
    record_effect()
    return "added"


async def _patch_point() -> list:
    version = CODE["version"]
    if version == 2:
        if zart.patched("add-step"):
            return [await added()]
        return ["old path"]
    if version == 3:
        zart.deprecate_patch("add-step")
        return [await added()]
    return ["old path"]  # version 1: the code from before the patch


@zart.workflow("patching")
async def patching(where: str) -> list:
    """The patch point comes `before` the event wait (executions parked there recorded what comes
    after it) or `after` it (they have not reached it yet)."""
    taken = [await prepare()]
    if where == "before":
        taken += await _patch_point()
    await zart.wait_for_event("go")
    if where == "after":
        taken += await _patch_point()
    return taken


@zart.workflow("patching-twice")
async def patching_twice() -> list:
    """One answer per patch and run: the second call answers as the first, and records nothing."""
    first = zart.patched("twice")
    await prepare()
    return [first, zart.patched("twice")]


@zart.step("patching-in-a-step")
def patch_in_a_step() -> str:
    try:
        zart.patched("in-a-step")
    except zart.ZartError as refused:
        return str(refused)
    return "allowed"


@zart.workflow("patching-in-a-step")
async def patching_in_a_step() -> list:
    """`zart.patched` in a step and in zart.parallel branches (steps too): refused each time."""
    alone = await patch_in_a_step()
    branches = await zart.parallel(patch_in_a_step(), patch_in_a_step())
    return [alone, *branches]


@zart.workflow("patching-bad-id")
async def patching_bad_id(patch_id: object) -> bool:
    return zart.patched(patch_id)  # type: ignore[arg-type]  # the test passes what is not an id


@zart.workflow("deprecating-bad-id")
async def deprecating_bad_id(patch_id: object) -> None:
    zart.deprecate_patch(patch_id)  # type: ignore[arg-type]
