"""Child workflows: a monthly run invoices each customer in a child workflow of its own:
`python monthly_invoicing.py` (in examples/).

`invoice-month` lists the customers and runs `invoice-customer` once per customer with `zart.map`:
one child execution each, at most 20 running at once, their results in customer order. Each
invoice is a workflow with its own retries and history, so a customer whose invoice fails can be
fixed and resumed alone (`zart resume ID`) while the others are done.
"""

from __future__ import annotations

import zart


@zart.step("ex-list-customers")
def list_customers(month: str) -> list[dict]:
    return [{"id": n, "hours": n % 7 + 1} for n in range(1, 51)]


@zart.step("ex-bill-hours")
def bill_hours(customer: dict) -> int:
    return customer["hours"] * 90  # a real step would call the billing service


@zart.step("ex-email-invoice")
def email_invoice(customer: dict, total: int) -> str:
    return f"invoice {customer['id']}: {total} EUR"


@zart.workflow("invoice-customer")
async def invoice_customer(customer: dict) -> int:
    total = await bill_hours(customer)
    await email_invoice(customer, total)
    return total


@zart.workflow("invoice-month")
async def invoice_month(month: str) -> dict:
    customers = await list_customers(month)
    totals = await zart.map(invoice_customer, customers, concurrency=20)  # one child per customer
    return {"month": month, "invoices": len(totals), "total": sum(totals)}


if __name__ == "__main__":
    with zart.Worker():  # a worker in this process, in a background thread
        handle = zart.start(invoice_month, "2026-11", id="invoices-2026-11")
        print(handle.result(timeout=60))
        children = handle.children()
        print(len(children), children[0].id, children[0].status)
