"""`zart demo`: the product end to end on one machine, with nothing to configure.

Migrates the (embedded) database, starts `zart supervise` with two worker processes, starts many
executions of the order-fulfillment workflow (examples/order_fulfillment.py, on shorter durations):
a validation, a payment that fails once for one order in ten and is retried, a durable sleep, a wait
for the `shipment_ready` event (which the demo delivers, like a warehouse would, once the execution
waits for it), a parallel fan-out and a durable loop. A progress bar follows them; a summary says
what ran and how fast. The supervisor is then drained with SIGTERM, as in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import zart

from . import db, pools, schema
from .errors import ExecutionFinished, ZartError

FINISHED = ("completed", "failed", "timed_out", "cancelled")
START_TIMEOUT = 60.0  # for the supervisor's workers to register
STALL_TIMEOUT = 120.0  # without any execution finishing, the demo gives up


class DemoFailed(ZartError):
    """The demo's supervisor did not start, or died, or the executions stopped moving."""


@zart.step("demo-validate-address")
async def validate_address(order_id: str) -> str:
    return f"address of order {order_id} is deliverable"


@zart.step("demo-process-payment", retry="exponential(3, 100ms)")
async def process_payment(order: dict) -> str:
    ctx = zart.context()
    if order.get("flaky_payment") and ctx.attempt == 1:  # one order in ten: the retry goes through
        raise ConnectionError("payment provider timed out")
    await trio.sleep(0)  # a real step would call the provider with ctx.idempotency_key
    return f"txn-{ctx.idempotency_key[-12:]}"


@zart.step("demo-render-invoice")
def render_invoice(order_id: str, amount: float) -> str:
    return f"invoice-{order_id}.pdf ({amount:.2f})"


@zart.step("demo-print-label")
def print_label(order_id: str, tracking_number: str) -> str:
    return f"label-{order_id}-{tracking_number}.pdf"


@zart.step("demo-pack-item")
def pack_item(item: str) -> int:
    return len(item)


@zart.workflow("demo-order-fulfillment", timeout="10m")
async def order_fulfillment(order: dict) -> dict:
    order_id = order["order_id"]
    await validate_address(order_id)
    txn = await process_payment(order)
    await zart.sleep("warehouse-settle", timedelta(milliseconds=order["settle_ms"]))
    shipment = await zart.wait_for_event("shipment_ready", timeout=timedelta(minutes=5))
    invoice, label = await zart.parallel(
        render_invoice(order_id, order["amount"]), print_label(order_id, shipment["tracking_number"])
    )
    sizes = await zart.map(pack_item, order["items"], concurrency=4)
    return {
        "txn": txn,
        "tracking": shipment["tracking_number"],
        "invoice": invoice,
        "label": label,
        "parcel_size": sum(sizes),
    }


ITEMS = ["mug", "teapot", "kettle", "tea towel", "spoon"]


def _order(tag: str, index: int) -> dict:
    return {
        "order_id": f"{tag}-{index:06d}",
        "amount": 10 + index % 90,
        "items": ITEMS[: 1 + index % 3],
        "flaky_payment": index % 10 == 3,
        "settle_ms": 300,
    }


class _Supervisor:
    """`zart supervise --app zart.demo` in a subprocess, its log in a temporary file."""

    def __init__(self, url: str, procs: int, concurrency: int) -> None:
        self.url = url
        self.procs = procs
        fd, name = tempfile.mkstemp(prefix="zart-demo-", suffix=".log")
        self.log_path = Path(name)
        self._log = os.fdopen(fd, "w")
        command = [sys.executable, "-m", "zart", "supervise", "--app", "zart.demo"]
        command += ["--procs", str(procs), "--concurrency", str(concurrency), "--grace", "10s"]
        command += ["--database-url", url]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoFailed(
                f"the supervisor exited with status {self.process.returncode}; "
                f"its log ({self.log_path}): {self.log_tail(3)!r}"
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            with pools.transaction(self.url) as conn:
                ready = conn.execute(
                    "SELECT count(*) FROM zart_workers WHERE supervisor_pid = %s", (self.process.pid,)
                ).fetchone()[0]
            if ready >= self.procs:
                return
            if time.monotonic() > deadline:
                raise DemoFailed(f"the supervisor's workers did not start in {START_TIMEOUT:g} s")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM: the workers drain and exit; the supervisor exits 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def _counts(url: str, ids: list[str]) -> tuple[dict[str, int], list[str]]:
    """Executions per status, and the ids of those waiting (for their shipment event)."""
    with pools.transaction(url) as conn:
        rows = conn.execute(
            "SELECT id, status FROM zart_execution_runs WHERE id = ANY(%s) AND status <> 'completed'",
            (ids,),
        ).fetchall()
    counts: dict[str, int] = {}
    for _, status in rows:
        counts[status] = counts.get(status, 0) + 1
    counts["completed"] = len(ids) - len(rows)
    return counts, [ident for ident, status in rows if status == "waiting"]


def _history_counts(url: str, ids: list[str]) -> dict[str, int]:
    with pools.transaction(url) as conn:
        kinds = dict(
            conn.execute(
                "SELECT kind, count(*) FROM zart_steps WHERE execution_id = ANY(%s) GROUP BY kind", (ids,)
            ).fetchall()
        )
        attempts = conn.execute(
            "SELECT count(*) FROM zart_step_attempts WHERE execution_id = ANY(%s)", (ids,)
        ).fetchone()[0]
    steps = kinds.get("step", 0)
    return {"steps": steps, "retries": attempts - steps, "sleeps": kinds.get("sleep", 0)}


def run_demo(
    *, runs: int, procs: int = 2, concurrency: int = 200, database_url: str | None = None
) -> dict[str, Any]:
    if runs < 1 or procs < 1 or concurrency < 1:
        raise ValueError("--runs, --procs and --concurrency must be at least 1")
    console = Console()
    url = db.resolve_url(database_url)
    applied = schema.migrate(url)
    console.print(f"[bold]zart demo[/] on {db.redact(url)}")
    console.print(f"schema: {'applied ' + str(len(applied)) + ' migration(s)' if applied else 'up to date'}")
    supervisor = _Supervisor(url, procs, concurrency)
    try:
        supervisor.wait_ready()
        console.print(f"supervisor: pid {supervisor.process.pid}, {procs} worker processes")
        tag = uuid.uuid4().hex[:8]
        begin = time.perf_counter()
        ids = [
            zart.start(order_fulfillment, _order(tag, i), id=f"demo-{tag}-{i:06d}", database_url=url).id
            for i in range(runs)
        ]
        delivered: set[str] = set()
        counts: dict[str, int] = {}
        last_done, last_progress = -1, time.monotonic()
        with Progress(
            TextColumn("order-fulfillment"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("runs", total=runs, detail="")
            while True:
                counts, waiting = _counts(url, ids)
                for execution_id in waiting:  # the warehouse reports each parcel ready
                    if execution_id not in delivered:
                        with contextlib.suppress(ExecutionFinished):  # cancelled meanwhile
                            zart.send_event(
                                execution_id,
                                "shipment_ready",
                                {"tracking_number": f"TRK-{execution_id[-6:]}"},
                                key=f"shipment-{execution_id}",
                                database_url=url,
                            )
                        delivered.add(execution_id)
                done = sum(counts.get(status, 0) for status in FINISHED)
                detail = ", ".join(
                    f"{counts[s]} {s}" for s in ("running", "sleeping", "waiting") if counts.get(s)
                )
                progress.update(bar, completed=done, detail=detail)
                if done >= runs:
                    break
                if done != last_done:
                    last_done, last_progress = done, time.monotonic()
                elif time.monotonic() - last_progress > STALL_TIMEOUT:
                    raise DemoFailed(f"no execution finished in {STALL_TIMEOUT:g} s ({done} of {runs} done)")
                supervisor.check_alive()
                time.sleep(0.05)
        elapsed = time.perf_counter() - begin
        history = _history_counts(url, ids)
    finally:
        code = supervisor.stop()
    if code != 0:
        raise DemoFailed(f"the supervisor exited with status {code} on SIGTERM: {supervisor.log_tail(3)!r}")
    supervisor.log_path.unlink(missing_ok=True)
    summary = {
        "runs": runs,
        "completed": counts.get("completed", 0),
        "failed": sum(counts.get(status, 0) for status in ("failed", "timed_out", "cancelled")),
        "worker processes": procs,
        "steps": history["steps"],
        "retries": history["retries"],
        "sleeps": history["sleeps"],
        "events delivered": len(delivered),
        "seconds": round(elapsed, 2),
        "workflows/s": round(runs / elapsed, 1),
        "steps/s": round(history["steps"] / elapsed, 1),
    }
    table = Table(title="zart demo summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    return summary
