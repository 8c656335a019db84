"""Child workflows: an order starts its shipment as a child: `python shipping.py` (in examples/).

`ship-order` charges the card, then runs `ship-parcel` as a child execution of its own (its own
history, retries and timeout) and waits for it without holding a worker. A parcel that cannot be
shipped fails the child; the order catches `zart.ChildFailed` and refunds the card.
"""

from __future__ import annotations

import zart


@zart.step("ex-charge-card")
def charge_card(order: dict) -> str:
    return f"charge-{order['id']}"


@zart.step("ex-refund-card")
def refund_card(charge: str) -> str:
    return f"refunded {charge}"


@zart.step("ex-book-courier", retry=zart.Retry.none())
def book_courier(parcel: dict) -> str:
    if parcel["weight_kg"] > 30:
        raise ValueError(f"{parcel['weight_kg']} kg is over the courier's 30 kg limit")
    return f"T-{parcel['order']}"


@zart.step("ex-print-label")
def print_label(parcel: dict, tracking: str) -> str:
    return f"label-{parcel['order']}-{tracking}.pdf"


@zart.workflow("ship-parcel")
async def ship_parcel(parcel: dict) -> dict:
    tracking = await book_courier(parcel)
    return {"tracking": tracking, "label": await print_label(parcel, tracking)}


@zart.workflow("ship-order")
async def ship_order(order: dict) -> dict:
    charge = await charge_card(order)
    parcel = {"order": order["id"], "weight_kg": order["weight_kg"]}
    try:
        # Started once, even if this worker dies here; its id is "ORDER-EXECUTION-ID/ship-parcel#1".
        shipment = await zart.child(ship_parcel, parcel)
    except zart.ChildFailed as failed:
        return {"shipped": False, "why": failed.child_error["message"], "refund": await refund_card(charge)}
    return {"shipped": True, **shipment}


if __name__ == "__main__":
    with zart.Worker():  # a worker in this process, in a background thread
        light = zart.start(ship_order, {"id": 41, "weight_kg": 2}, id="order-41")
        heavy = zart.start(ship_order, {"id": 42, "weight_kg": 45}, id="order-42")
        print(light.result(timeout=30))
        print(heavy.result(timeout=30))
        print([(child.id, child.status) for child in light.children()])
        print(zart.get("order-42/ship-parcel#1").status())
