"""Transactional steps: money moves exactly once: `python bank_transfer.py` (in examples/).

`transfer` debits one account and credits another, each in a transactional step: the UPDATE and the
step's checkpoint are committed in one transaction on Zart's database, so a crash, a kill or a retry
can never apply either twice. Between them, a plain step calls another service with the step's
idempotency key (at least once: the service must accept a repeat). The accounts live in Zart's
database, the application's own tables beside Zart's.
"""

from __future__ import annotations

import psycopg
import zart


@zart.transaction("ex-debit", retry="fixed(3, 100ms)")
def debit(conn: psycopg.Connection, account: str, amount: int) -> int:
    row = conn.execute(
        "UPDATE ex_accounts SET balance = balance - %s WHERE id = %s AND balance >= %s RETURNING balance",
        (amount, account, amount),
    ).fetchone()
    if row is None:  # rolled back with the step: nothing of this attempt remains
        raise zart.NonRetryable(f"account {account} cannot pay {amount}")
    return row[0]


@zart.transaction("ex-credit", retry="fixed(3, 100ms)")
def credit(conn: psycopg.Connection, account: str, amount: int) -> int:
    (balance,) = conn.execute(
        "UPDATE ex_accounts SET balance = balance + %s WHERE id = %s RETURNING balance", (amount, account)
    ).fetchone()
    return balance


@zart.step("ex-notify-bank")
def notify_bank(transfer: dict) -> str:
    # A call to another service: pass the idempotency key, the same on every attempt of this step.
    return f"notified with key {zart.context().idempotency_key}"


@zart.workflow("ex-transfer")
async def transfer(request: dict) -> dict:
    left = await debit(request["from"], request["amount"])
    note = await notify_bank(request)
    right = await credit(request["to"], request["amount"])
    return {"from": left, "to": right, "note": note}


@zart.transaction("ex-open-accounts")
def open_accounts(conn: psycopg.Connection, balances: dict) -> int:
    """Called outside a workflow (below), a transactional step is a transaction of its own."""
    conn.execute("CREATE TABLE IF NOT EXISTS ex_accounts (id text PRIMARY KEY, balance bigint NOT NULL)")
    for account, balance in balances.items():
        conn.execute(
            "INSERT INTO ex_accounts VALUES (%s, %s)"
            " ON CONFLICT (id) DO UPDATE SET balance = excluded.balance",
            (account, balance),
        )
    return len(balances)


if __name__ == "__main__":
    open_accounts({"alice": 100, "bob": 0})
    with zart.Worker():  # a worker in this process, in a background thread
        handle = zart.start(transfer, {"from": "alice", "to": "bob", "amount": 30}, id="transfer-1")
        print(handle.result(timeout=30))
        failed = zart.start(transfer, {"from": "bob", "to": "alice", "amount": 500}, id="transfer-2")
        try:
            failed.result(timeout=30)
        except zart.WorkflowFailed as error:
            print(error.message)
    print(credit("alice", 0))  # alice's balance, read in a transaction of its own
