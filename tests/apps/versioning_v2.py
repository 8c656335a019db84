"""Version 2 of the `versioned` workflow (see versioning_v1): an `audit` step added behind a patch,
before the event wait where executions of version 1 are parked.

Those recorded the wait where the patch now is, so `zart.patched` answers False for them and they
finish on the old path; executions that reach the patch running this code take the new one.
"""

from __future__ import annotations

import zart

from .core_app import record_effect


@zart.step("versioned-prepare")
def prepare(n: int) -> int:
    record_effect(n)
    return n


@zart.step("versioned-audit")
def audit(n: int) -> str:
    record_effect(n)
    return f"audited {n}"


@zart.step("versioned-finish")
def finish(n: int) -> int:
    record_effect(n)
    return n * 10


@zart.workflow("versioned")
async def versioned(n: int) -> list:
    taken: list = [await prepare(n)]
    if zart.patched("audit"):
        taken.append(await audit(n))
    await zart.wait_for_event("go")
    return [*taken, await finish(n)]
