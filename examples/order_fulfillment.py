"""Order fulfillment, the workflow of the contract, on durations short enough to run in seconds.

It validates the address, takes the payment (the provider times out once: the retry succeeds),
sleeps durably while the warehouse settles, waits for the `shipment_ready` event, renders the
invoice and the label in parallel, and packs every item in a durable loop.

    python order_fulfillment.py         # in examples/: one order, on a worker in this process

Or with a worker process (`zart worker --app order_fulfillment`):

    zart start order-fulfillment --input '{"order_id": "42", "amount": 9.5, "items": ["mug"]}' --id order-42
    zart send-event order-42 shipment_ready --payload '{"tracking_number": "T1"}'
    zart show order-42
"""

from __future__ import annotations

from datetime import timedelta

import zart


@zart.step("validate-address")
async def validate_address(order_id: str) -> str:
    return f"address of order {order_id} is deliverable"


@zart.step("process-payment", retry="exponential(3, 200ms)")  # 3 retries after the first try
async def process_payment(order_id: str, amount: float) -> str:
    ctx = zart.context()
    if ctx.attempt == 1:  # the provider times out once; the retry, 200ms later, goes through
        raise ConnectionError("payment provider timed out")
    return f"txn-{ctx.idempotency_key}"  # stable across retries: the provider's idempotency key


@zart.step("render-invoice", timeout="30s")  # a plain `def` step runs in a worker thread
def render_invoice(order_id: str, amount: float) -> str:
    return f"invoice-{order_id}.pdf ({amount:.2f})"


@zart.step("print-shipping-label")
def print_shipping_label(order_id: str, tracking_number: str) -> str:
    return f"label-{order_id}-{tracking_number}.pdf"


@zart.step("pack-order-item")
def pack_order_item(item: str) -> int:
    return len(item)  # the parcel space the item takes


@zart.workflow("order-fulfillment", timeout="30m")
async def order_fulfillment(order: dict) -> dict:
    order_id = order["order_id"]
    await validate_address(order_id)
    txn = await process_payment(order_id, order["amount"])
    await zart.sleep("warehouse-settle", timedelta(seconds=1))  # durable: holds no worker
    shipment = await zart.wait_for_event("shipment_ready", timeout=timedelta(minutes=5))
    invoice, label = await zart.parallel(  # fan out, wait for both
        render_invoice(order_id, order["amount"]),
        print_shipping_label(order_id, shipment["tracking_number"]),
    )
    sizes = await zart.map(pack_order_item, order["items"], concurrency=8)  # a checkpoint per item
    return {
        "txn": txn,
        "tracking": shipment["tracking_number"],
        "invoice": invoice,
        "label": label,
        "parcel_size": sum(sizes),
    }


if __name__ == "__main__":
    with zart.Worker():  # a worker in this process, in a background thread
        handle = zart.start(order_fulfillment, {"order_id": "42", "amount": 9.5, "items": ["mug", "teapot"]})
        # An event sent before the workflow reaches its wait is kept for it.
        zart.send_event(handle.id, "shipment_ready", {"tracking_number": "T1"}, key=f"ship-{handle.id}")
        print(handle.result(timeout=60))
        print(f"history: zart show {handle.id}")
