"""`zart demo`: the product end to end on one machine, with nothing to configure.

Migrates the (embedded) database, runs a worker, starts many executions of a 3-step order workflow,
waits for all of them with a progress bar, and prints what ran and how fast.
"""

from __future__ import annotations

import time
import uuid

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import zart

from . import db, schema


@zart.step("demo-validate-order")
async def validate_order(order: dict) -> dict:
    if order["amount"] <= 0:
        raise ValueError("amount must be positive")
    return {"order_id": order["order_id"], "valid": True}


@zart.step("demo-charge-card")
async def charge_card(order_id: str, amount: float) -> str:
    await trio.sleep(0)  # a real step would call a payment API with zart.context().idempotency_key
    return f"txn-{zart.context().idempotency_key[-12:]}-{amount:.2f}"


@zart.step("demo-ship")
def ship(order_id: str) -> dict:
    return {"order_id": order_id, "tracking": f"TRK-{order_id[-6:]}"}


@zart.workflow("demo-order")
async def demo_order(order: dict) -> dict:
    await validate_order(order)
    txn = await charge_card(order["order_id"], order["amount"])
    shipment = await ship(order["order_id"])
    return {"txn": txn, "tracking": shipment["tracking"]}


def run_demo(*, runs: int, concurrency: int, database_url: str | None) -> dict:
    console = Console()
    url = db.resolve_url(database_url)
    console.print(f"[bold]zart demo[/] on {db.redact(url)}")
    applied = schema.migrate(url)
    console.print(f"schema: {'applied ' + str(len(applied)) + ' migration(s)' if applied else 'up to date'}")
    batch_tag = uuid.uuid4().hex[:8]
    with zart.Worker(url, concurrency=concurrency, batch=100, lease="30s") as worker:
        begin = time.perf_counter()
        handles = [
            zart.start(
                demo_order,
                {"order_id": f"{batch_tag}-{i:06d}", "amount": 10 + i % 90},
                id=f"demo-{batch_tag}-{i:06d}",
                database_url=url,
            )
            for i in range(runs)
        ]
        ids = [h.id for h in handles]
        counts: dict[str, int] = {}
        with Progress(
            TextColumn("running"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("executions", total=runs)
            while True:
                with db.transaction(url) as conn:
                    counts = dict(
                        conn.execute(
                            "SELECT status, count(*) FROM zart_execution_runs"
                            " WHERE id = ANY(%s) GROUP BY status",
                            (ids,),
                        ).fetchall()
                    )
                done = sum(counts.get(s, 0) for s in ("completed", "failed", "timed_out", "cancelled"))
                progress.update(bar, completed=done)
                if done >= runs:
                    break
                time.sleep(0.05)
        elapsed = time.perf_counter() - begin
        with db.transaction(url) as conn:
            steps = conn.execute(
                "SELECT count(*) FROM zart_steps WHERE execution_id = ANY(%s)", (ids,)
            ).fetchone()[0]
        batches = worker._completer.batches if worker._completer else 0
    summary = {
        "runs": runs,
        "completed": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
        "steps": steps,
        "seconds": round(elapsed, 3),
        "workflows_per_s": round(runs / elapsed, 1),
        "steps_per_s": round(steps / elapsed, 1),
        "checkpoint_commits": batches,
    }
    table = Table(title="zart demo summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    return summary
