"""Approval with a timeout, end to end: `python approval_run.py` (in examples/).

Runs the `expense-approval` workflow of approval.py on a worker in this process twice: once the
approver answers (the `approved` event wakes the waiting execution), once nobody does and the
wait times out after a second.
"""

from __future__ import annotations

import time

import zart

from approval import expense_approval

with zart.Worker():  # a worker in this process, in a background thread
    approved = zart.start(expense_approval, {"expense_id": "e-1", "amount": 120})
    deadline = time.monotonic() + 30
    while approved.status() != "waiting" and time.monotonic() < deadline:
        time.sleep(0.05)  # it asks the approver, then waits for the event, holding no worker
    print(approved.status())
    zart.send_event(approved.id, "approved", {"by": "alice"})  # e.g. from the link in the e-mail
    print(approved.result(timeout=30))

    expired = zart.start(expense_approval, {"expense_id": "e-2", "amount": 80, "timeout": "1s"})
    print(expired.result(timeout=30))
