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

from .helpers import REPO_ROOT, query, run_cli

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
