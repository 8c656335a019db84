"""The workflow the load test drives: an order that waits for its shipment event.

`zart supervise --app bench.workflows` runs it; `zart serve --app bench.workflows` knows its name
(it would also know it from the workers' registration).
"""

from __future__ import annotations

from datetime import timedelta

import zart

WORKFLOW = "bench-order"
EVENT = "shipment_ready"


@zart.step("bench-reserve-stock")
async def reserve_stock(order_id: str, items: int) -> str:
    return f"reservation-{order_id}-{items}"


@zart.step("bench-charge-card", retry="exponential(3, 100ms)")
async def charge_card(order_id: str, amount: float) -> dict:
    return {"txn": f"txn-{zart.context().idempotency_key}", "amount": amount}


@zart.step("bench-ship")
async def ship(order_id: str, tracking_number: str) -> str:
    return f"shipped {order_id} as {tracking_number}"


@zart.workflow(WORKFLOW, timeout="1h")
async def bench_order(order: dict) -> dict:
    reservation = await reserve_stock(order["order_id"], order["items"])
    payment = await charge_card(order["order_id"], order["amount"])
    shipment = await zart.wait_for_event(EVENT, timeout=timedelta(minutes=30))
    label = await ship(order["order_id"], shipment["tracking_number"])
    return {"reservation": reservation, "txn": payment["txn"], "label": label}
