"""Zart's side of bench/peers.py: the three-step workflow, as `zart supervise --app bench.peer_apps`
imports it. DBOS's twin is in bench/peers_dbos.py; both add one to a number three times."""

from __future__ import annotations

import zart


@zart.step("peers-add-one")
async def add_one(n: int) -> int:
    return n + 1


@zart.workflow("peers-add-three")
async def add_three(n: int) -> int:
    n = await add_one(n)
    n = await add_one(n)
    return await add_one(n)
