"""`zart.patched` and `zart.deprecate_patch`: changing a workflow's code under executions in flight.

An in-process worker runs tests/apps/patching_app.py, whose code version a test switches (a deploy)
while executions are parked in an event wait. The acceptance test with real worker processes and
`zart replay-check` is tests/test_replay_check.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import zart

from .apps import patching_app
from .helpers import query, run_cli, scalar, wait_until


@pytest.fixture(autouse=True)
def code_version() -> Iterator[dict[str, int]]:
    patching_app.CODE["version"] = 1
    yield patching_app.CODE
    patching_app.CODE["version"] = 1


def _keys(handle: zart.ExecutionHandle) -> list[str]:
    return [entry.key for entry in handle.steps()]


def _parked(database_url: str, where: str) -> zart.ExecutionHandle:
    """An execution of `patching` run up to its event wait by the code of this moment."""
    handle = zart.start(patching_app.patching, where, id=f"patch-{uuid.uuid4()}", database_url=database_url)
    wait_until(lambda: handle.status() == "waiting", what="the execution to wait for its event")
    return handle


def _finish(database_url: str, handle: zart.ExecutionHandle) -> object:
    zart.send_event(handle.id, "go", database_url=database_url)
    return handle.result(timeout=30)


def _runs_of_added(database_url: str, execution_id: str) -> int:
    return scalar(
        database_url,
        "SELECT count(*) FROM test_effects WHERE execution_id = %s AND step_key = 'patching-added#1'",
        (execution_id,),
    )


def test_new_code_records_the_marker_takes_the_new_path_and_replays_it(database_url, worker, code_version):
    code_version["version"] = 2
    handle = _parked(database_url, "before")
    assert _finish(database_url, handle) == ["prepared", "added"]  # the end is a replay of the marker
    assert _keys(handle) == ["patching-prepare#1", "patch:add-step#1", "patching-added#1", "event:go#1"]
    assert query(
        database_url,
        "SELECT seq, kind, status, output::text, attempts FROM zart_steps"
        " WHERE execution_id = %s AND step_key = 'patch:add-step#1'",
        (handle.id,),
    ) == [(1, "patch", "completed", "true", 0)]
    assert _runs_of_added(database_url, handle.id) == 1


def test_show_and_get_list_the_marker(database_url, worker, code_version, subprocess_env):
    code_version["version"] = 2
    handle = _parked(database_url, "before")
    marker = zart.get(handle.id, database_url=database_url).steps()[1]
    assert (marker.key, marker.position, marker.kind, marker.status, marker.result) == (
        "patch:add-step#1",
        1,
        "patch",
        "completed",
        True,
    )
    shown = run_cli("show", handle.id, env=subprocess_env)
    assert shown.returncode == 0, shown.stderr
    (line,) = [line for line in shown.stdout.splitlines() if "patch:add-step#1" in line]
    assert line.split()[:4] == ["2", "patch:add-step#1", "patch", "completed"]
    assert line.endswith("patched 'add-step': runs the code with this patch")
    as_json = run_cli("show", handle.id, "--json", env=subprocess_env)
    assert '"key":"patch:add-step#1","position":1,"kind":"patch","status":"completed","result":true' in (
        as_json.stdout
    )
    _finish(database_url, handle)


def test_a_history_from_before_the_patch_takes_the_old_path(database_url, worker, code_version):
    old = _parked(database_url, "before")  # version 1 recorded the event wait where the patch now is
    code_version["version"] = 2
    assert _finish(database_url, old) == ["prepared", "old path"]
    assert _keys(old) == ["patching-prepare#1", "event:go#1"]  # no marker, no new step
    assert _runs_of_added(database_url, old.id) == 0


def test_an_execution_that_reaches_the_patch_with_the_new_code_takes_the_new_path(
    database_url, worker, code_version
):
    parked = _parked(database_url, "after")  # version 1 parked it before the point of the patch
    code_version["version"] = 2
    assert _finish(database_url, parked) == ["prepared", "added"]
    assert _keys(parked) == ["patching-prepare#1", "event:go#1", "patch:add-step#1", "patching-added#1"]


def test_deprecate_patch_consumes_the_marker_and_records_none(database_url, worker, code_version):
    code_version["version"] = 2
    patched = _parked(database_url, "before")  # has the marker
    code_version["version"] = 3
    assert _finish(database_url, patched) == ["prepared", "added"]
    assert _keys(patched) == ["patching-prepare#1", "patch:add-step#1", "patching-added#1", "event:go#1"]
    assert _runs_of_added(database_url, patched.id) == 1
    fresh = _parked(database_url, "before")  # started under version 3: no marker any more
    assert _finish(database_url, fresh) == ["prepared", "added"]
    assert _keys(fresh) == ["patching-prepare#1", "patching-added#1", "event:go#1"]


def test_deprecate_patch_does_not_make_an_old_history_replay(database_url, worker, code_version):
    """The old branch may go only once no execution can reach it: one that still can diverges."""
    old = _parked(database_url, "before")
    code_version["version"] = 3
    with pytest.raises(zart.WorkflowFailed) as failure:
        _finish(database_url, old)
    assert failure.value.error_type == "NonDeterminismError"
    assert "'patching-added#1' at position 2" in str(failure.value)
    assert "'event:go#1'" in str(failure.value)


def test_one_answer_per_patch_and_run(database_url, worker):
    handle = zart.start(patching_app.patching_twice, id=f"twice-{uuid.uuid4()}", database_url=database_url)
    assert handle.result(timeout=30) == [True, True]
    assert _keys(handle) == ["patch:twice#1", "patching-prepare#1"]


def test_patched_outside_a_workflow_body_is_refused(database_url, worker):
    with pytest.raises(zart.ZartError, match=r"zart\.patched\(\) can only be called inside a workflow"):
        zart.patched("x")
    with pytest.raises(zart.ZartError, match=r"zart\.deprecate_patch\(\) can only be called inside a"):
        zart.deprecate_patch("x")
    handle = zart.start(
        patching_app.patching_in_a_step, id=f"in-step-{uuid.uuid4()}", database_url=database_url
    )
    refused = (
        "zart.patched() is called in a workflow's body, not in a step (it was called in step {!r}; a "
        "zart.parallel or zart.map branch is a step): a patch chooses which durable calls the body makes next"
    )
    assert handle.result(timeout=30) == [
        refused.format(key)
        for key in ("patching-in-a-step#1", "patching-in-a-step#2", "patching-in-a-step#3")
    ]


@pytest.mark.parametrize(
    ("workflow", "patch_id", "error_type", "message"),
    [
        (patching_app.patching_bad_id, "", "ValueError", "a patch id must be 1 to 200 characters long"),
        (patching_app.patching_bad_id, 7, "TypeError", "a patch id must be a string, not int"),
        (patching_app.deprecating_bad_id, "a\nb", "ValueError", "contains control characters"),
        (patching_app.patching_bad_id, "x" * 201, "ValueError", "1 to 200 characters long, not 201"),
    ],
)
def test_bad_patch_ids_fail_the_execution(database_url, worker, workflow, patch_id, error_type, message):
    handle = zart.start(workflow, patch_id, id=f"bad-id-{uuid.uuid4()}", database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failure:
        handle.result(timeout=30)
    assert failure.value.error_type == error_type
    assert message in str(failure.value)
