"""Version 3 of the `versioned` workflow (see versioning_v1): version 2 with its `audit` step renamed,
without a patch. The executions that ran the audit under version 2 would diverge; `zart replay-check`
must list exactly those.
"""

from __future__ import annotations

import zart

from .core_app import record_effect


@zart.step("versioned-prepare")
def prepare(n: int) -> int:
    record_effect(n)
    return n


@zart.step("versioned-audit-v3")
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
