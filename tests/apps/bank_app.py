"""Workflows for the transactional-step tests: a bank whose accounts live in the test database."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import trio

import zart

ACCOUNTS_SQL = """
CREATE TABLE IF NOT EXISTS bank_accounts (id integer PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE IF NOT EXISTS bank_entries (
    transfer text NOT NULL, account integer NOT NULL, amount bigint NOT NULL, attempt integer NOT NULL,
    PRIMARY KEY (transfer, account)
);
"""


@zart.transaction("bank-debit", retry="fixed(2, 10ms)")
def debit(conn: psycopg.Connection, transfer: dict) -> int:
    """Takes the amount off the source account, and records the entry (once: its primary key)."""
    context = zart.context()
    conn.execute(
        "INSERT INTO bank_entries VALUES (%s, %s, %s, %s)",
        (transfer["id"], transfer["from"], -transfer["amount"], context.attempt),
    )
    row = conn.execute(
        "UPDATE bank_accounts SET balance = balance - %s WHERE id = %s RETURNING balance",
        (transfer["amount"], transfer["from"]),
    ).fetchone()
    return row[0]


@zart.transaction("bank-credit", retry="fixed(2, 10ms)")
def credit(conn: psycopg.Connection, transfer: dict) -> int:
    context = zart.context()
    conn.execute(
        "INSERT INTO bank_entries VALUES (%s, %s, %s, %s)",
        (transfer["id"], transfer["to"], transfer["amount"], context.attempt),
    )
    row = conn.execute(
        "UPDATE bank_accounts SET balance = balance + %s WHERE id = %s RETURNING balance",
        (transfer["amount"], transfer["to"]),
    ).fetchone()
    return row[0]


@zart.step("bank-notify")
async def notify(transfer: dict) -> str:
    """A plain step between the two (a call to another service, say)."""
    await trio.sleep(0.001)
    return f"transfer {transfer['id']} on its way"


@zart.workflow("bank-transfer")
async def transfer(request: dict) -> dict:
    request = {**request, "id": zart.context().execution_id}
    after_debit = await debit(request)
    note = await notify(request)
    after_credit = await credit(request)
    return {"from": after_debit, "to": after_credit, "note": note}


@zart.transaction("bank-fails", retry="fixed(2, 10ms)")
def fails(conn: psycopg.Connection, transfer: dict) -> None:
    """Writes, then raises: every attempt's writes roll back."""
    conn.execute(
        "INSERT INTO bank_entries VALUES (%s, %s, %s, %s)",
        (transfer["id"], 1, 1, zart.context().attempt),
    )
    raise RuntimeError(f"attempt {zart.context().attempt} fails after its write")


@zart.workflow("bank-failing")
async def failing(request: dict) -> str:
    try:
        await fails({**request, "id": zart.context().execution_id})
    except zart.StepFailed as failed:
        return failed.message
    return "no failure"


@zart.transaction("bank-hot-row", isolation="serializable")
def bump_hot_row(conn: psycopg.Connection, amount: int) -> int:
    """Read, then write the same row: under serializable isolation, concurrent bumps conflict."""
    (balance,) = conn.execute("SELECT balance FROM bank_accounts WHERE id = 0").fetchone()
    conn.execute("UPDATE bank_accounts SET balance = %s WHERE id = 0", (balance + amount,))
    return balance + amount


@zart.workflow("bank-bump")
async def bump(amount: int) -> int:
    return await bump_hot_row(amount)


@zart.transaction("bank-gated")
def gated_write(conn: psycopg.Connection, request: dict) -> int:
    """Writes, records in a side file that it did, then waits for a gate: a worker stopped here
    holds the transaction open."""
    conn.execute(
        "INSERT INTO bank_entries VALUES (%s, %s, %s, %s)",
        (request["id"], 1, 1, zart.context().attempt),
    )
    Path(request["marker"]).write_text(str(os.getpid()))
    while not Path(request["gate"]).exists():
        import time

        time.sleep(0.01)
    return os.getpid()


@zart.workflow("bank-gated")
async def gated(request: dict) -> int:
    return await gated_write({**request, "id": zart.context().execution_id})


@zart.transaction("bank-deposit")
def deposit(conn: psycopg.Connection, entry: dict) -> int:
    conn.execute(
        "INSERT INTO bank_entries VALUES (%s, %s, %s, %s)",
        (entry["transfer"], entry["account"], entry["amount"], zart.context().attempt),
    )
    (balance,) = conn.execute(
        "UPDATE bank_accounts SET balance = balance + %s WHERE id = %s RETURNING balance",
        (entry["amount"], entry["account"]),
    ).fetchone()
    return balance


@zart.workflow("bank-deposits")
async def deposits(request: dict) -> dict:
    """Deposits in parallel (each branch its own transaction), then one per account with zart.map."""
    transfer = zart.context().execution_id
    pair = await zart.parallel(
        deposit({"transfer": transfer, "account": request["accounts"][0], "amount": 1}),
        deposit({"transfer": transfer, "account": request["accounts"][1], "amount": 1}),
    )
    mapped = await zart.map(
        deposit,
        [{"transfer": f"{transfer}/map", "account": account, "amount": 2} for account in request["accounts"]],
    )
    return {"parallel": pair, "map": mapped}


@zart.transaction("bank-slow", timeout="300ms", retry="none")
def slow(conn: psycopg.Connection, request: dict) -> str:
    """Writes, then outlasts its timeout: in a query (the statement timeout cancels it) or in Python
    (the commit becomes a rollback)."""
    conn.execute("INSERT INTO bank_entries VALUES (%s, 1, 1, 1)", (request["id"],))
    if request["in_query"]:
        conn.execute("SELECT pg_sleep(2)")
    else:
        import time

        time.sleep(0.5)
    return "committed"


@zart.workflow("bank-too-slow")
async def too_slow(in_query: bool) -> str:
    try:
        return await slow({"id": zart.context().execution_id, "in_query": in_query})
    except zart.StepFailed as failed:
        return f"{failed.error_type}: {failed.message}"
