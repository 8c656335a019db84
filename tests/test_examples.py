"""Acceptance 1: each runnable example runs to completion, as its docstring says to run it.

Each runs in a subprocess (`python NAME.py` in examples/), with a real worker in that process, on
the session's database.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT, query, run_cli, scalar

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture
def example_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ, ZART_DATABASE_URL=database_url)
    env.pop("ZART_TEST_EFFECTS_URL", None)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_example(env: dict[str, str], name: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, name, *args], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


def _keys(url: str, execution_id: str) -> list[str]:
    rows = query(url, "SELECT step_key FROM zart_steps WHERE execution_id = %s ORDER BY seq", (execution_id,))
    return [row[0] for row in rows]


def test_order_fulfillment(database_url, example_env, subprocess_env):
    result_line, history_line = run_example(example_env, "order_fulfillment.py")
    result = ast.literal_eval(result_line)
    execution_id = history_line.removeprefix("history: zart show ")
    assert result == {
        "txn": f"txn-{execution_id}/process-payment#1",
        "tracking": "T1",
        "invoice": "invoice-42.pdf (9.50)",
        "label": "label-42-T1.pdf",
        "parcel_size": 9,
    }
    assert _keys(database_url, execution_id) == [
        "validate-address#1",
        "process-payment#1",
        "sleep:warehouse-settle#1",
        "event:shipment_ready#1",
        "render-invoice#1",
        "print-shipping-label#1",
        "pack-order-item[0]",
        "pack-order-item[1]",
    ]
    attempts = query(
        database_url,
        "SELECT attempt, outcome FROM zart_step_attempts WHERE execution_id = %s"
        " AND step_key = 'process-payment#1' ORDER BY attempt",
        (execution_id,),
    )
    assert attempts == [(1, "failed"), (2, "succeeded")]
    shown = run_cli("show", execution_id, env=subprocess_env)  # the command the example prints
    assert shown.returncode == 0 and "sleep:warehouse-settle#1" in shown.stdout


def test_approval_with_timeout(example_env):
    assert run_example(example_env, "approval_run.py") == [
        "waiting",
        "{'status': 'paid', 'receipt': 'paid e-1, approved by alice'}",
        "{'status': 'expired', 'expense_id': 'e-2'}",
    ]


def test_parallel_fanout(example_env):
    booked, released = map(ast.literal_eval, run_example(example_env, "parallel_fanout.py"))
    assert booked == {
        "booked": True,
        "reservations": ["flight to Lisbon on 2024-06-01", "hotel in Lisbon, 3 nights", "car in Lisbon"],
    }
    assert released == {
        "booked": False,
        "reason": "no car left in Lisbon",
        "released": ["released flight to Lisbon on 2024-06-01", "released hotel in Lisbon, 3 nights"],
    }


def test_brewery_report_durable_loop(database_url, example_env, tmp_path):
    report = tmp_path / "report.md"
    lines = run_example(example_env, "brewery_report.py", str(report))
    assert ast.literal_eval(lines[0]) == {
        "breweries": 32,
        "regions": {"Midwest": 6, "Northeast": 4, "South": 11, "West": 11},
        "report": str(report),
    }
    text = report.read_text()
    assert lines[1:] == text.splitlines()
    assert "| West | 11 | Cascade Falls Brewing (1999) |" in text and "- micro: 15" in text
    (execution_id,) = query(
        database_url,
        "SELECT id FROM zart_execution_runs WHERE workflow = 'brewery-report' AND input->>'report' = %s",
        (str(report),),
    )[0]
    keys = _keys(database_url, execution_id)
    assert keys == [
        "load-breweries#1",
        *(f"enrich-brewery[{index}]" for index in range(32)),  # a checkpoint per row
        "write-brewery-report#1",
    ]


def test_versioning_patch(database_url, example_env, subprocess_env):
    assert run_example(example_env, "versioning.py") == [
        "['charged ada', 'receipt sent to ada', 'extended the subscription of ada']",
        "['renewal-charge#1', 'patch:send-receipt#1', 'renewal-receipt#1', 'sleep:grace-period#1', "
        "'renewal-extend#1']",
    ]
    assert query(
        database_url, "SELECT kind, output::text FROM zart_steps WHERE step_key = 'patch:send-receipt#1'"
    ) == [("patch", "true")]
    checked = run_cli(
        "replay-check", "--app", "examples.versioning", "--workflow", "renewal", env=subprocess_env
    )
    assert checked.returncode == 0, checked
    assert checked.stdout.endswith(" consistent\n") and "would" not in checked.stdout


# -- queues and flow control (docs/queues.md) -----------------------------------------------------------


def _runs(url: str, where: str, params: tuple = ()) -> list[tuple]:
    """(started_at, finished_at, queue, queue_key, priority, status) of the executions matching `where`."""
    return query(
        url,
        "SELECT started_at, finished_at, queue, queue_key, priority, status FROM zart_execution_runs"
        f" WHERE {where} ORDER BY started_at, queue_key",
        params,
    )


def _most_at_once(runs: list[tuple]) -> int:
    """The largest number of these executions in progress (begun, not ended) at one moment."""
    moments = sorted([(run[0], 1) for run in runs] + [(run[1], -1) for run in runs])
    now = most = 0
    for _, change in moments:
        now += change
        most = max(most, now)
    return most


def _limits(url: str, queue: str) -> list[tuple]:
    return query(
        url, "SELECT concurrency, per_key, rate_limit, rate_period FROM zart_queues WHERE name = %s", (queue,)
    )


def test_queues_concurrency(database_url, example_env):
    assert run_example(example_env, "queues_concurrency.py") == [
        "['report-1-1.png', 'report-1-2.png'] ['report-6-1.png', 'report-6-2.png']",
        "in progress at once, at most: 2",
    ]
    runs = _runs(database_url, "id LIKE 'render-report-%%'")
    assert len(runs) == 6 and {run[2] for run in runs} == {"ex-q-renders"}
    assert _most_at_once(runs) == 2  # the limit binds, and holds
    assert _limits(database_url, "ex-q-renders") == [(2, None, None, None)]


def test_queues_tenants(database_url, example_env):
    assert run_example(example_env, "queues_tenants.py")[1] == (
        "began in this order: ['acme', 'globex', 'initech', 'acme', 'acme', 'acme']"
    )
    runs = _runs(database_url, "queue = 'ex-q-exports'")
    assert [run[3] for run in runs].count("acme") == 4 and len(runs) == 6
    assert _most_at_once([run for run in runs if run[3] == "acme"]) == 1  # per_key=1
    assert _most_at_once(runs) == 2  # concurrency=2
    assert _limits(database_url, "ex-q-exports") == [(2, 1, None, None)]


def test_queues_rate(database_url, example_env):
    assert run_example(example_env, "queues_rate.py") == [
        "{'address': '10 Main Street', 'lat': 52.51, 'lon': 13.4}",
        "began in any 500 ms, at most: 4",
        "from the first begin to the last, at least 1 s: True",
    ]
    begins = [run[0] for run in _runs(database_url, "queue = 'ex-q-geocoding'")]
    assert len(begins) == 10
    assert max(sum(1 for t in begins if 0 <= (t - b).total_seconds() < 0.5) for b in begins) == 4
    assert _limits(database_url, "ex-q-geocoding") == [(None, None, 4, 0.5)]


def test_queues_priority(database_url, example_env):
    assert run_example(example_env, "queues_priority.py") == [
        "['password-reset', 'receipt', 'newsletter', 'newsletter', 'newsletter']"
    ]
    runs = _runs(database_url, "queue = 'ex-q-mail'")
    assert [run[4] for run in runs] == [-10, 0, 10, 10, 10]  # began in priority order
    assert _most_at_once(runs) == 1


def test_queues_delay(database_url, example_env):
    assert run_example(example_env, "queues_delay.py") == [
        "pending pending",
        "reminded ada | reminded bob",
        "completed True",
        "completed True",
    ]
    rows = query(
        database_url,
        "SELECT input::text, extract(epoch FROM started_at - created_at), timeout_seconds, status"
        " FROM zart_execution_runs WHERE workflow = 'ex-q-reminder' ORDER BY input::text",
    )
    (ada, ada_waited, ada_timeout, ada_status), (bob, bob_waited, _, bob_status) = rows
    assert (ada, bob) == ('"ada"', '"bob"')
    assert ada_waited >= 1 and 0.5 < bob_waited < 5
    # The 500 ms timeout counted from the begin: waiting 1 s before it did not time the execution out.
    assert ada_timeout == 0.5 and ada_status == bob_status == "completed"


def test_queues_bulk(database_url, example_env):
    assert run_example(example_env, "queues_bulk.py") == [
        "200 invoice-2024-05-c1 invoice-2024-05-c200",
        "True False",
        "invoice-2024-05-c1.pdf invoice-2024-05-c200.pdf 200",
    ]
    runs = _runs(database_url, "id LIKE 'invoice-2024-05-c%%'")
    assert len(runs) == 200 and {run[5] for run in runs} == {"completed"}
    assert _most_at_once(runs) <= 10
    # One transaction: every execution has its transaction's start time as its creation time.
    assert query(
        database_url,
        "SELECT count(DISTINCT created_at) FROM zart_execution_runs WHERE id LIKE 'invoice-2024-05-c%%'",
    ) == [(1,)]


def test_queues_outbox(database_url, example_env):
    assert run_example(example_env, "queues_outbox.py") == [
        "card declined for order 2",
        "confirmed order 1 to ada@example.com",
        "confirmed order 3 to cy@example.com",
        "no execution with id 'confirm-2'",
        "[(1,), (3,)]",
    ]
    assert query(
        database_url,
        "SELECT id, status FROM zart_execution_runs WHERE id IN ('confirm-1', 'confirm-2', 'confirm-3')"
        " ORDER BY id",
    ) == [("confirm-1", "completed"), ("confirm-3", "completed")]


def test_queues_errors_start_nothing(database_url, example_env):
    lines = run_example(example_env, "queues_errors.py")
    assert len(lines) == 11
    # The known queues listed depend on the database: the docs' run shows them on a database of its own.
    assert lines[3].startswith("UnknownQueue: unknown queue 'ex-q-nowhere'; known queues: ")
    assert "'default'" in lines[3] and "'ex-q-renders'" in lines[3]
    assert lines[:3] + lines[4:] == [
        line
        for line in _docs_console_output("docs/queues.md", "python queues_errors.py")
        if not line.startswith("UnknownQueue: ")
    ]
    assert query(
        database_url,
        "SELECT count(*) FROM zart_execution_runs WHERE workflow = 'ex-q-render' AND input->>'name' = 'r'",
    ) == [(0,)]
    assert _limits(database_url, "ex-q-broken") == [] and _limits(database_url, "ex-q-nowhere") == []


def _docs_console_output(page: str, command: str) -> list[str]:
    from .test_docs import blocks, commands

    for block in blocks(page):
        for argv, expected in commands(block):
            if " ".join(argv) == command:
                return expected or []
    raise AssertionError(f"{page} does not run `{command}`")


def test_queues_django_example(database_url, example_env):
    """docs/queues.md shows the heart of queues_django.py as text (Django is not a dependency of Zart, so
    CI lints the file but does not run it): the text is the file's, and the file runs where Django is."""
    from .test_docs import blocks

    (shown,) = [
        b.text for b in blocks("docs/queues.md") if b.lang == "text" and "transaction.atomic()" in b.text
    ]
    assert shown in (EXAMPLES / "queues_django.py").read_text()
    pytest.importorskip("django", reason="Django is not installed: `pip install django` to run this example")
    assert run_example(example_env, "queues_django.py") == [
        "card declined for order 12",
        "confirmed order 11 to dee@example.com",
        "no execution with id 'confirm-12'",
    ]
    assert query(database_url, "SELECT id FROM shop_orders WHERE id IN (11, 12)") == [(11,)]


def test_progress_stream(example_env):
    progress = [
        f"{{'done': {i}, 'of': 3, 'photo': '{photo}'}}"
        for i, photo in enumerate(["cat.jpg", "dog.jpg", "owl.jpg"], 1)
    ]
    assert run_example(example_env, "progress.py") == [*progress, "3"]
    assert run_example(example_env, "progress_sse.py") == progress


def test_nightly_schedule(database_url, example_env):
    fired, names = run_example(example_env, "nightly.py")
    assert fired.startswith("True report for ") and fired.endswith(" orders")
    assert "'ex-nightly-report'" in names and "ex-nightly-now" not in names


def test_shipping_child_workflow(database_url, example_env):
    shipped, refunded, children, heavy_child = run_example(example_env, "shipping.py")
    assert ast.literal_eval(shipped) == {"shipped": True, "tracking": "T-41", "label": "label-41-T-41.pdf"}
    assert ast.literal_eval(refunded) == {
        "shipped": False,
        "why": "step 'ex-book-courier#1' failed: ValueError: 45 kg is over the courier's 30 kg limit",
        "refund": "refunded charge-42",
    }
    assert ast.literal_eval(children) == [("order-41/ship-parcel#1", "completed")]
    assert heavy_child == "failed"
    assert _keys(database_url, "order-42") == ["ex-charge-card#1", "child:ship-parcel#1", "ex-refund-card#1"]


def test_monthly_invoicing_maps_over_children(database_url, example_env):
    result, children = run_example(example_env, "monthly_invoicing.py")
    assert ast.literal_eval(result) == {"month": "2026-11", "invoices": 50, "total": 17820}
    assert children == "50 invoices-2026-11/invoice-customer[0] completed"
    assert (
        scalar(database_url, "SELECT count(*) FROM zart_execution_runs WHERE parent_id = 'invoices-2026-11'")
        == 50
    )


def test_bank_transfer_transactional_steps(database_url, example_env):
    moved, refused, balance = run_example(example_env, "bank_transfer.py")
    assert ast.literal_eval(moved) == {
        "from": 70,
        "to": 30,
        "note": "notified with key transfer-1/ex-notify-bank#1",
    }
    assert refused == "step 'ex-debit#1' failed: NonRetryable: account bob cannot pay 500"
    assert balance == "70"
    assert query(database_url, "SELECT id, balance FROM ex_accounts ORDER BY id") == [
        ("alice", 70),
        ("bob", 30),
    ]
