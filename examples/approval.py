"""Approval with a timeout: the workflow waits for a human's `approved` event, at most a day.

Run a worker with `zart worker --app examples.approval`, then:

    zart start expense-approval --input '{"expense_id": "e-1", "amount": 120}' --id e-1
    zart send-event e-1 approved --payload '{"by": "alice"}'
    zart status e-1
"""

from __future__ import annotations

import zart


@zart.step("notify-approver")
def notify_approver(expense_id: str, amount: float) -> str:
    # A real step would e-mail the approver a link that delivers the event (HTTP API or CLI).
    return f"asked for approval of {expense_id} ({amount:.2f})"


@zart.step("pay-expense")
def pay_expense(expense_id: str, approver: str) -> str:
    return f"paid {expense_id}, approved by {approver}"


@zart.workflow("expense-approval")
async def expense_approval(request: dict) -> dict:
    await notify_approver(request["expense_id"], request["amount"])
    try:
        decision = await zart.wait_for_event("approved", timeout=request.get("timeout", "1d"))
    except zart.EventTimeout:
        return {"status": "expired", "expense_id": request["expense_id"]}
    receipt = await pay_expense(request["expense_id"], decision["by"])
    return {"status": "paid", "receipt": receipt}
