"""zart.cancel: ends an execution for good, whatever it is doing."""

from __future__ import annotations

import pytest

import zart

from .apps import core_app, events_app
from .helpers import query, scalar, wait_until


def test_cancel_a_waiting_execution(database_url, worker):
    handle = zart.start(events_app.wait_for_one, {}, database_url=database_url)
    wait_until(lambda: handle.status() == "waiting", what="the wait")
    assert zart.cancel(handle.id, reason="customer withdrew", database_url=database_url) is True
    with pytest.raises(zart.Cancelled):
        handle.result(timeout=5)
    assert handle.info().error == {"type": "Cancelled", "message": "customer withdrew", "traceback": ""}
    assert scalar(database_url, "SELECT count(*) FROM zart_tasks WHERE execution_id = %s", (handle.id,)) == 0
    assert zart.cancel(handle.id, database_url=database_url) is False  # already over
    with pytest.raises(zart.ExecutionFinished):
        zart.send_event(handle.id, "go", database_url=database_url)


def test_cancel_mid_step_records_nothing_after_it(database_url, worker, tmp_path):
    gate = tmp_path / "gate"
    handle = zart.start(core_app.gated, {"n": 1, "gate": str(gate)}, database_url=database_url)
    wait_until(
        lambda: scalar(
            database_url,
            "SELECT count(*) FROM zart_step_attempts WHERE execution_id = %s"
            " AND step_key = 'wait-for-gate#1'",
            (handle.id,),
        ),
        what="the gate step to start",
    )
    assert handle.cancel() is True
    gate.touch()
    with pytest.raises(zart.Cancelled):
        handle.result(timeout=5)
    # The worker notices at its next commit (or lease renewal) and stops: the gate step's result
    # and the step after it are never recorded.
    wait_until(lambda: not worker._state.held, what="the worker to let go of the execution")
    keys = [
        row[0]
        for row in query(
            database_url, "SELECT step_key FROM zart_steps WHERE execution_id = %s", (handle.id,)
        )
    ]
    assert keys == ["add-one#1", "double#1"]
    assert handle.status() == "cancelled"
    # The attempt that was running is closed, not left open forever.
    assert [(a.step_key, a.outcome, a.error_type) for a in handle.attempts()][-1] == (
        "wait-for-gate#1",
        "abandoned",
        "Cancelled",
    )


def test_cancel_unknown_execution(database_url):
    with pytest.raises(zart.ExecutionNotFound, match="no execution with id 'ghost'"):
        zart.cancel("ghost", database_url=database_url)


def test_history_and_attempts_of_an_execution(database_url, worker):
    handle = zart.start(core_app.three_steps, {"n": 2}, database_url=database_url)
    handle.result(timeout=30)
    steps = handle.steps()
    assert [(s.key, s.kind, s.status, s.result) for s in steps] == [
        ("add-one#1", "step", "completed", 3),
        ("double#1", "step", "completed", 6),
        ("describe#1", "step", "completed", {"value": 6, "context": f"{handle.id}/describe#1"}),
    ]
    attempts = handle.attempts()
    assert [(a.step_key, a.attempt, a.outcome) for a in attempts] == [
        ("add-one#1", 1, "succeeded"),
        ("double#1", 1, "succeeded"),
        ("describe#1", 1, "succeeded"),
    ]
    assert all(a.worker_id == worker.worker_id for a in attempts)
