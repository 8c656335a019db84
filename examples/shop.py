# shop.py
import zart


@zart.step("reserve-stock")
async def reserve_stock(order_id: str) -> str:
    return f"reservation-{order_id}"


@zart.step("charge-card")
def charge_card(order_id: str, amount: float) -> str:  # a plain `def` step runs in a thread
    # zart.context().idempotency_key is stable across retries: give it to the payment API
    return f"txn-{zart.context().idempotency_key}"


@zart.workflow("order")
async def order(payload: dict) -> dict:
    reservation = await reserve_stock(payload["order_id"])
    txn = await charge_card(payload["order_id"], payload["amount"])
    return {"reservation": reservation, "txn": txn}
