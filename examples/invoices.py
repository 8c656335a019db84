# invoices.py
import json
from pathlib import Path

import zart


@zart.step("load-order")
def load_order(invoice: dict) -> dict:
    return {"id": invoice["id"], "amount": invoice["amount"], "country": invoice["country"]}


@zart.step("apply-tax", retry="fixed(2, 100ms)")
def apply_tax(order: dict, rates_file: str) -> float:
    rates = json.loads(Path(rates_file).read_text())
    return round(order["amount"] * (1 + rates[order["country"]]), 2)  # KeyError: no rate for it


@zart.step("send-invoice")
def send_invoice(order: dict, total: float) -> str:
    return f"invoice {order['id']}: {total}"


@zart.workflow("invoice")
async def invoice(payload: dict) -> str:
    order = await load_order(payload)
    total = await apply_tax(order, payload["rates_file"])
    return await send_invoice(order, total)
