"""Workflows the dashboard's tests look at: retries, an event wait, a failure, branches, a child."""

from __future__ import annotations

import zart

# Attempts of `charge` per order id: the first attempt of each order fails, the second succeeds.
_charged: dict[str, int] = {}


@zart.step("dash-reserve")
def reserve(order: dict) -> str:
    return f"reserved {order['item']}"


@zart.step("dash-charge", retry="fixed(3, 50ms)")
def charge(order: dict) -> int:
    seen = _charged.get(order["id"], 0) + 1
    _charged[order["id"]] = seen
    if seen == 1:
        raise ConnectionError(f"card network busy for {order['item']}")
    return order["amount"]


@zart.step("dash-pack")
def pack(order: dict, part: int) -> str:
    return f"{order['item']} part {part}"


@zart.workflow("dash-order")
async def order_flow(order: dict) -> dict:
    """Reserve, charge (retried once), pack in two branches, then wait for approval."""
    await reserve(order)
    amount = await charge(order)
    parts = await zart.parallel(pack(order, 1), pack(order, 2))
    approval = await zart.wait_for_event("approved", timeout=3600)
    return {"item": order["item"], "amount": amount, "parts": parts, "approval": approval}


@zart.step("dash-explode", retry="fixed(2, 10ms)")
def explode(order: dict) -> None:
    raise ValueError(f"cannot ship {order['item']}")


@zart.workflow("dash-doomed")
async def doomed(order: dict) -> None:
    await reserve(order)
    await explode(order)


@zart.workflow("dash-echo")
async def echo(value: object) -> object:
    return value


@zart.workflow("dash-parent")
async def parent(order: dict) -> object:
    return await zart.child(echo, order)


# No `schedule=` and no `zart.Queue` here: declared ones would be registered by every in-process
# worker of the test session; the browser test makes its schedule and queue in its own database.
@zart.workflow("dash-nightly")
async def nightly(fired_at: str) -> str:
    return fired_at


@zart.step("dash-stall")
def stall(marker: str) -> str:
    """Its first attempt writes `marker` and hangs (the test kills its worker); later ones return."""
    import os
    import time

    if not os.path.exists(marker):
        with open(marker, "w") as written:
            written.write("first attempt")
        time.sleep(120)
    return "done"


@zart.workflow("dash-crash")
async def crash(payload: dict) -> str:
    await reserve({"item": "crate"})
    return await stall(payload["marker"])
