"""Durability with real `zart worker` processes and real SIGKILLs (acceptance 2, 3, 4 and the
non-determinism part of 5)."""

from __future__ import annotations

import uuid

import pytest

import zart

from .apps import core_app
from .helpers import WorkerProcess, query, scalar, wait_until


def _effect_counts(url: str, execution_id: str) -> dict[str, int]:
    return dict(
        query(
            url,
            "SELECT step_key, count(*) FROM test_effects WHERE execution_id = %s GROUP BY step_key",
            (execution_id,),
        )
    )


def _attempts(url: str, execution_id: str, step_key: str) -> list[tuple]:
    return query(
        url,
        "SELECT attempt, outcome, worker_id FROM zart_step_attempts"
        " WHERE execution_id = %s AND step_key = %s ORDER BY attempt",
        (execution_id, step_key),
    )


def _gate_is_blocking(url: str, execution_id: str) -> bool:
    """The gate step's first attempt is on record and has not finished."""
    return bool(
        scalar(
            url,
            "SELECT count(*) FROM zart_step_attempts WHERE execution_id = %s"
            " AND step_key = 'wait-for-gate#1' AND outcome IS NULL",
            (execution_id,),
        )
    ) and bool(_effect_counts(url, execution_id).get("wait-for-gate#1"))


@pytest.fixture
def gate(tmp_path):
    return tmp_path / f"gate-{uuid.uuid4().hex}"


def test_sigkill_mid_step_resumes_without_repeating_checkpointed_steps(database_url, subprocess_env, gate):
    first = WorkerProcess(subprocess_env)
    try:
        first.wait_started()
        handle = zart.start(core_app.gated, {"n": 3, "gate": str(gate)}, database_url=database_url)
        wait_until(lambda: _gate_is_blocking(database_url, handle.id), what="the gate step to start")
        checkpointed = [
            row[0]
            for row in query(
                database_url,
                "SELECT step_key FROM zart_steps WHERE execution_id = %s ORDER BY seq",
                (handle.id,),
            )
        ]
        assert checkpointed == ["add-one#1", "double#1"]
        first.kill()
    finally:
        first.stop()

    gate.touch()  # the next attempt of the gate step goes through
    second = WorkerProcess(subprocess_env)
    try:
        second.wait_started()
        assert handle.result(timeout=30) == [4, 6, "opened", 10]
    finally:
        second.stop()

    counts = _effect_counts(database_url, handle.id)
    assert counts == {"add-one#1": 1, "double#1": 1, "wait-for-gate#1": 2, "describe#1": 1}
    attempts = _attempts(database_url, handle.id, "wait-for-gate#1")
    assert [(a, outcome) for a, outcome, _ in attempts] == [(1, "abandoned"), (2, "succeeded")]
    assert attempts[0][2] != attempts[1][2], "the retry ran on the new worker"
    assert _attempts(database_url, handle.id, "add-one#1")[0][:2] == (1, "succeeded")


def test_replay_after_crash_sees_the_same_decoded_dataclass(database_url, subprocess_env, gate):
    first = WorkerProcess(subprocess_env)
    try:
        first.wait_started()
        handle = zart.start(core_app.dataclass_replay, {"gate": str(gate)}, database_url=database_url)
        wait_until(lambda: _gate_is_blocking(database_url, handle.id), what="the gate step to start")
        first.kill()
    finally:
        first.stop()
    gate.touch()
    second = WorkerProcess(subprocess_env)
    try:
        second.wait_started()
        result = handle.result(timeout=30)
    finally:
        second.stop()
    expected = {"x": 1, "y": 2.5, "label": "é", "tags": ["b", "a"]}
    assert result == {"point": expected, "type": "dict"}
    seen = query(
        database_url,
        "SELECT step_key, value::text, pid FROM test_effects WHERE execution_id = %s"
        " AND step_key LIKE 'observe#%%' ORDER BY id",
        (handle.id,),
    )
    assert [row[0] for row in seen] == ["observe#1", "observe#2"]
    assert seen[0][2] != seen[1][2], "the second observation ran in the new worker, after replay"
    # Same value, same type, same key order, before the crash and after the replay.
    assert seen[0][1] == seen[1][1] == '{"type":"dict","value":{"x":1,"y":2.5,"label":"é","tags":["b","a"]}}'
    assert _effect_counts(database_url, handle.id)["make-point#1"] == 1


def test_changed_step_order_fails_with_non_determinism_error_naming_both_keys(
    database_url, subprocess_env, gate
):
    first = WorkerProcess(subprocess_env)
    try:
        first.wait_started()
        handle = zart.start(core_app.gated, {"n": 1, "gate": str(gate)}, database_url=database_url)
        wait_until(lambda: _gate_is_blocking(database_url, handle.id), what="the gate step to start")
        first.kill()
    finally:
        first.stop()
    gate.touch()
    new_code = WorkerProcess(dict(subprocess_env, ZART_TEST_SWAP_ORDER="1"))
    try:
        new_code.wait_started()
        with pytest.raises(zart.WorkflowFailed) as failure:
            handle.result(timeout=30)
    finally:
        new_code.stop()
    assert failure.value.error_type == "NonDeterminismError"
    assert "'double#1'" in failure.value.message and "'add-one#1'" in failure.value.message
    # Nothing ran past the divergence.
    assert "describe#1" not in _effect_counts(database_url, handle.id)


def test_two_workers_run_500_workflows_each_step_exactly_once(fresh_database_url, subprocess_env):
    url = fresh_database_url
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    workers = [WorkerProcess(env, "--concurrency", "50", "--batch", "20", "--lease", "10s") for _ in range(2)]
    try:
        for process in workers:
            process.wait_started()
        handles = [zart.start(core_app.three_steps, {"n": i}, database_url=url) for i in range(500)]
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'") == 500,
            timeout=120,
            interval=0.1,
            what="500 executions to complete",
        )
    finally:
        codes = [process.stop() for process in workers]
    assert codes == [0, 0]
    assert handles[7].result(timeout=5) == {"value": 16, "context": f"{handles[7].id}/describe#1"}
    # Every step's side effect happened exactly once.
    assert scalar(url, "SELECT count(*) FROM test_effects") == 1500
    assert (
        scalar(url, "SELECT count(*) FROM (SELECT DISTINCT execution_id, step_key FROM test_effects) d")
        == 1500
    )
    # One attempt per step, and every execution ran on exactly one worker.
    assert query(url, "SELECT attempt, outcome, count(*) FROM zart_step_attempts GROUP BY 1, 2") == [
        (1, "succeeded", 1500)
    ]
    assert (
        scalar(
            url,
            "SELECT max(n) FROM (SELECT count(DISTINCT worker_id) AS n FROM zart_step_attempts"
            " GROUP BY execution_id) per_execution",
        )
        == 1
    )
    per_worker = query(url, "SELECT worker_id, count(*) FROM zart_step_attempts GROUP BY 1")
    assert len(per_worker) == 2, f"both workers took part: {per_worker}"
    assert scalar(url, "SELECT count(*) FROM zart_tasks") == 0
