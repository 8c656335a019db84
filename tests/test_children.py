"""Child workflows (issue 16): zart.child, zart.map over a workflow, cancellation down the tree, and
real SIGKILLs of `zart supervise` workers in the middle of a map of 200 children."""

from __future__ import annotations

import json
import os
import random
import signal
from urllib.parse import quote

import httpx
import pytest

import zart

from .apps import children_app
from .helpers import (
    SupervisorProcess,
    WorkerProcess,
    assert_no_checkpointed_step_ran_twice,
    child_pids,
    query,
    run_cli,
    scalar,
    wait_until,
)
from .test_http import check, server_env, serving


def children_of(url: str, parent_id: str) -> list[tuple[str, str, str]]:
    return query(
        url,
        "SELECT id, parent_key, status FROM zart_execution_runs WHERE parent_id = %s"
        " ORDER BY parent_group, parent_seq",
        (parent_id,),
    )


def test_a_child_runs_as_its_own_execution_and_its_result_is_checkpointed(worker, database_url):
    handle = zart.start(children_app.one_child, 3, database_url=database_url)
    assert handle.result(timeout=30) == {"before": 9, "child": 16}
    child_id = f"{handle.id}/square-child#1"
    assert children_of(database_url, handle.id) == [(child_id, "child:square-child#1", "completed")]
    assert zart.get(child_id, database_url=database_url).result(timeout=5) == 16
    history = query(
        database_url,
        "SELECT step_key, kind, status, output::text FROM zart_steps WHERE execution_id = %s ORDER BY seq",
        (handle.id,),
    )
    assert history == [
        ("child-square#1", "step", "completed", "9"),
        ("child:square-child#1", "child", "completed", "16"),
    ]


def test_zart_show_and_the_http_api_show_parent_and_children(worker, database_url):
    handle = zart.start(children_app.mixed_parallel, 1, database_url=database_url)
    assert handle.result(timeout=30) == [1, 4, 9]
    first_child = f"{handle.id}/square-child#1"
    env = server_env(database_url)
    shown = run_cli("show", handle.id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "children   2: 2 completed" in shown.stdout
    assert first_child in shown.stdout and "child:square-child#2" in shown.stdout
    child_shown = run_cli("show", first_child, env=env)
    assert f"parent     {handle.id} (child:square-child#1)" in child_shown.stdout
    as_json = json.loads(run_cli("show", handle.id, "--json", env=env).stdout)
    assert as_json["parent"] is None and as_json["children_count"] == 2
    assert as_json["children"][0] == {
        "id": first_child,
        "workflow": "square-child",
        "status": "completed",
        "key": "child:square-child#1",
    }
    with serving(database_url, "tests.apps.children_app") as base, httpx.Client(base_url=base) as api:
        parent = check(api.get(f"/v1/executions/{quote(handle.id, safe='')}"), 200)
        assert parent["children"] == as_json["children"] and parent["children_count"] == 2
        child = check(api.get(f"/v1/executions/{quote(first_child, safe='')}"), 200)
        assert child["parent"] == {"id": handle.id, "key": "child:square-child#1"}
        assert child["children"] == [] and child["children_count"] == 0


def test_a_parent_parks_for_children_that_outlast_its_wait_in_memory(worker, database_url):
    """Children its worker runs at once, one slower than the parent's second in memory and one that
    sleeps durably: the parent parks (`waiting`, no slot held), and the children's ends wake it."""
    handle = zart.start(children_app.patient_parent, {"slow": 1.5, "sleep": "1s"}, database_url=database_url)
    status = "SELECT status FROM zart_execution_runs WHERE id = %s"
    claimed = "SELECT claimed_by FROM zart_tasks WHERE execution_id = %s AND kind = 'workflow'"
    wait_until(
        lambda: (
            scalar(database_url, status, (handle.id,)) == "waiting"
            and scalar(database_url, claimed, (handle.id,)) is None
        ),
        what="the parent parked while its children run",
    )
    assert handle.result(timeout=30) == [1.5, "rested"]
    assert [row[2] for row in children_of(database_url, handle.id)] == ["completed", "completed"]


def test_a_failed_child_raises_child_failed_which_the_parent_catches(worker, database_url):
    handle = zart.start(children_app.catches_child_failure, "boom", database_url=database_url)
    outcome = handle.result(timeout=30)
    assert outcome["caught"] == "ChildFailed"
    assert outcome["status"] == "failed"
    assert outcome["child"] == f"{handle.id}/failing-child#1"
    assert "RuntimeError: boom" in outcome["message"]
    assert zart.get(outcome["child"], database_url=database_url).status() == "failed"


def test_parallel_mixes_steps_and_children(worker, database_url):
    handle = zart.start(children_app.mixed_parallel, 2, database_url=database_url)
    assert handle.result(timeout=30) == [4, 9, 16]
    assert [row[1] for row in children_of(database_url, handle.id)] == [
        "child:square-child#1",
        "child:square-child#2",
    ]


def test_map_over_a_workflow_keeps_at_most_concurrency_children_running(worker, database_url):
    handle = zart.start(children_app.sum_of_squares, {"n": 12, "concurrency": 3}, database_url=database_url)
    assert handle.result(timeout=60) == sum(n * n for n in range(12))
    children = children_of(database_url, handle.id)
    assert [row[0] for row in children] == [f"{handle.id}/slow-square-child[{n}]" for n in range(12)]
    # The children's lifetimes, from begin to end: never more than 3 overlap.
    spans = query(
        database_url,
        "SELECT started_at, finished_at FROM zart_execution_runs WHERE parent_id = %s",
        (handle.id,),
    )
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert peak == 3


def test_cancelling_a_parent_cancels_its_waiting_children_and_theirs(worker, database_url):
    handle = zart.start(children_app.parent_of_waiters, 2, database_url=database_url)
    below = (
        "WITH RECURSIVE t AS (SELECT id FROM zart_execution_runs WHERE parent_id = %s"
        " UNION SELECT r.id FROM zart_execution_runs r JOIN t ON r.parent_id = t.id)"
        " SELECT r.id, r.status FROM zart_execution_runs r JOIN t USING (id)"
    )
    wait_until(
        lambda: sorted(status for _, status in query(database_url, below, (handle.id,))) == ["waiting"] * 3,
        what="two children and a grandchild waiting for their events",
    )
    assert handle.cancel() is True
    descendants = query(database_url, below, (handle.id,))
    assert sorted(status for _, status in descendants) == ["cancelled"] * 3
    ids = [execution_id for execution_id, _ in descendants]
    assert scalar(database_url, "SELECT count(*) FROM zart_tasks WHERE execution_id = ANY(%s)", (ids,)) == 0
    with pytest.raises(zart.Cancelled):
        zart.get(ids[0], database_url=database_url).result(timeout=5)


def test_cancelling_a_child_fails_its_parents_wait_with_child_failed(worker, database_url):
    handle = zart.start(children_app.waiting_tree, 0, database_url=database_url)
    child_id = f"{handle.id}/event-waiting-child#1"
    wait_until(
        lambda: (
            scalar(database_url, "SELECT status FROM zart_execution_runs WHERE id = %s", (child_id,))
            == "waiting"
        ),
        what="the child waiting for its event",
    )
    zart.cancel(child_id, reason="no longer needed", database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failed:
        handle.result(timeout=30)
    assert failed.value.error_type == "ChildFailed"
    assert "cancelled: Cancelled: no longer needed" in failed.value.message


def test_a_parent_that_times_out_cancels_its_children(worker, database_url):
    handle = zart.start(children_app.impatient_parent, database_url=database_url)
    with pytest.raises(zart.WorkflowTimedOut):
        handle.result(timeout=30)
    child = zart.get(f"{handle.id}/event-waiting-child#1", database_url=database_url)
    assert child.status() == "cancelled"
    assert child.info().error["message"] == "its parent execution ended before it did"


def test_resuming_a_failed_child_then_its_parent_repairs_the_tree(worker, database_url, tmp_path):
    """The documented repair: the child failed, so did its parent (ChildFailed, not caught). Resume
    the child once fixed, then the parent: it reaches the call again and takes the child's result,
    without starting another child."""
    path = tmp_path / "input.txt"
    handle = zart.start(children_app.parent_of_a_file_reader, str(path), database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failed:
        handle.result(timeout=30)
    assert failed.value.error_type == "ChildFailed"
    child = zart.get(f"{handle.id}/file-reading-child#1", database_url=database_url)
    path.write_text("fixed")
    zart.resume(child.id, database_url=database_url)
    assert child.result(timeout=30) == "fixed"
    zart.resume(handle.id, database_url=database_url)
    assert handle.result(timeout=30) == "read: fixed"
    assert [row[0] for row in children_of(database_url, handle.id)] == [child.id]


def test_a_child_id_taken_by_another_execution_is_a_child_failed(worker, database_url):
    other = zart.start(children_app.square_child, 5, database_url=database_url)
    handle = zart.start(children_app.named_child, {"n": 2, "id": other.id}, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failed:
        handle.result(timeout=30)
    assert failed.value.error_type == "ChildFailed"
    assert f"the child execution id {other.id} is taken by another execution" in failed.value.message
    assert other.result(timeout=30) == 25  # untouched


def test_a_given_child_id_is_used(worker, database_url):
    handle = zart.start(
        children_app.named_child, {"n": 4, "id": "named-child-of-test"}, database_url=database_url
    )
    assert handle.result(timeout=30) == 16
    assert children_of(database_url, handle.id) == [
        ("named-child-of-test", "child:square-child#1", "completed")
    ]


@zart.workflow("child-of-unknown")
async def child_of_unknown() -> object:
    return await zart.child("no-such-workflow", 1)


@zart.workflow("child-of-a-step")
async def child_of_a_step() -> object:
    return await zart.child(children_app.square, 1)


@zart.workflow("map-with-bad-concurrency")
async def map_with_bad_concurrency() -> object:
    return await zart.map(children_app.square_child, [1, 2], concurrency=0)


@pytest.mark.parametrize(
    ("workflow", "error_type", "message"),
    [
        (child_of_unknown, "UnknownWorkflow", "unknown workflow 'no-such-workflow'"),
        (child_of_a_step, "TypeError", "zart.child() takes a @zart.workflow function or its name"),
        (map_with_bad_concurrency, "ValueError", "concurrency must be a whole number >= 1"),
    ],
    ids=["unknown-workflow", "a-step", "bad-concurrency"],
)
def test_a_bad_child_call_fails_the_parent_with_a_clear_error(
    worker, database_url, workflow, error_type, message
):
    handle = zart.start(workflow, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failed:
        handle.result(timeout=30)
    assert failed.value.error_type == error_type
    assert message in failed.value.message
    assert children_of(database_url, handle.id) == []


def test_zart_child_outside_a_workflow_says_so():
    with pytest.raises(zart.ZartError, match=r"zart.child\(\) can only be called inside a workflow"):
        zart.child(children_app.square_child, 1)


def test_children_run_at_once_by_a_worker_that_is_sigkilled_finish_on_another(
    database_url, subprocess_env, tmp_path
):
    """Children the parent's worker claimed in its commit and ran at once: SIGKILL that worker while
    their steps are in flight. Another worker takes the parent and the children over; the parent
    ends with every child's result, and only the steps in flight at the kill ran again."""
    gate = tmp_path / "gate"
    first = WorkerProcess(subprocess_env, app="tests.apps.children_app")
    try:
        first.wait_started()
        handle = zart.start(children_app.three_gated_children, str(gate), database_url=database_url)
        ids = [f"{handle.id}/gated-child#{n}" for n in (1, 2, 3)]
        in_gate = (
            "SELECT count(*) FROM zart_step_attempts"
            " WHERE step_key = 'child-gate#1' AND outcome IS NULL AND execution_id = ANY(%s)"
        )
        wait_until(lambda: scalar(database_url, in_gate, (ids,)) == 3, what="three children at their gates")
        # claimed in the parent's commit by the parent's own worker: no claim of theirs
        assert (
            scalar(
                database_url,
                "SELECT count(DISTINCT claimed_by) FROM zart_tasks WHERE execution_id = ANY(%s)",
                ([handle.id, *ids],),
            )
            == 1
        )
        first.kill()
    finally:
        first.stop()
    gate.touch()
    second = WorkerProcess(subprocess_env, app="tests.apps.children_app")
    try:
        second.wait_started()
        assert handle.result(timeout=60) == [0, 2, 6]  # n*n + n
    finally:
        second.stop()
    assert [row[2] for row in children_of(database_url, handle.id)] == ["completed"] * 3
    effects = dict(
        query(
            database_url,
            "SELECT execution_id || ' ' || step_key, count(*) FROM test_effects"
            " WHERE execution_id = ANY(%s) GROUP BY 1",
            (ids,),
        )
    )
    for child_id in ids:
        assert effects[f"{child_id} child-square#1"] == 1  # checkpointed before the kill: not run again
        assert effects[f"{child_id} child-gate#1"] == 2  # in flight at the kill: ran again
    abandoned = query(
        database_url,
        "SELECT execution_id, outcome FROM zart_step_attempts WHERE step_key = 'child-gate#1'"
        " AND attempt = 1 AND execution_id = ANY(%s)",
        (ids,),
    )
    assert sorted(outcome for _, outcome in abandoned) == ["abandoned"] * 3


def test_a_map_of_200_children_survives_three_sigkills(fresh_database_url, subprocess_env):
    """The acceptance run: 200 children, 50 at a time, under `zart supervise --procs 2`; three workers
    SIGKILLed while children run. The sum is right, exactly 200 children exist, and no checkpointed
    step ran again (only the steps in flight at a kill)."""
    url = fresh_database_url
    supervisor = SupervisorProcess(
        dict(subprocess_env, ZART_DATABASE_URL=url), "--procs", "2", app="tests.apps.children_app"
    )
    try:
        supervisor.wait_workers(2)
        handle = zart.start(children_app.sum_of_squares, {"n": 200, "concurrency": 50}, database_url=url)
        done = "SELECT count(*) FROM zart_execution_runs WHERE parent_id = %s AND status = 'completed'"
        for threshold in (30, 80, 130):
            wait_until(
                lambda threshold=threshold: scalar(url, done, (handle.id,)) >= threshold,
                what=f"{threshold} children done",
            )
            assert handle.status() != "completed"
            os.kill(random.choice(child_pids(supervisor.process.pid)), signal.SIGKILL)
        assert handle.result(timeout=120) == sum(n * n for n in range(200))
    finally:
        assert supervisor.stop() == 0
    assert supervisor.log().count("status='killed by SIGKILL'") == 3
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE parent_id = %s", (handle.id,)) == 200
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == 201
    assert scalar(url, "SELECT count(*) FROM zart_steps WHERE execution_id = %s", (handle.id,)) == 200
    assert_no_checkpointed_step_ran_twice(url)
    # The kills cut children's steps short: those attempts, and only those, ran again.
    assert scalar(url, "SELECT count(*) FROM zart_step_attempts WHERE outcome = 'abandoned'") >= 1
