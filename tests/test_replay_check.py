"""Changing workflow code under executions in flight, end to end: `zart.patched` with real worker
processes, and `zart replay-check` as the deploy gate. Then the check's verdicts one by one, on
histories written here (no database), and its errors.
"""

from __future__ import annotations

import contextlib

import orjson
import pytest
import trio

import zart
from examples import order_fulfillment  # noqa: F401 - registers the workflow whose histories are written here
from zart.history import Checkpoint
from zart.history_reads import RecordedExecution
from zart.replay_check import Verdict, check_executions

from .apps import patching_app
from .conftest import _create_database, _drop_database
from .helpers import WorkerProcess, query, run_cli, scalar, wait_until

OLD, NEW, PARKED = 100, 20, 5


def _count(url: str, prefix: str, status: str) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM zart_execution_runs WHERE id LIKE %s AND status = %s",
        (f"{prefix}-%", status),
    )


def _start(url: str, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{n}" for n in range(count)]
    zart.start_many("versioned", list(range(count)), ids, database_url=url)
    wait_until(lambda: _count(url, prefix, "waiting") == count, what=f"the {prefix} executions to wait")
    return ids


def _finish(url: str, ids: list[str]) -> None:
    for execution_id in ids:
        zart.send_event(execution_id, "go", database_url=url)


def _results(url: str, prefix: str) -> dict[str, object]:
    rows = query(url, "SELECT id, result::text FROM zart_execution_runs WHERE id LIKE %s", (f"{prefix}-%",))
    return {execution_id: orjson.loads(result) for execution_id, result in rows}


def _audits(url: str, prefix: str) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM test_effects WHERE execution_id LIKE %s AND step_key = 'versioned-audit#1'",
        (f"{prefix}-%",),
    )


def test_a_patch_keeps_old_executions_on_the_old_path_and_replay_check_finds_what_diverges(
    fresh_database_url, subprocess_env
):
    url = fresh_database_url
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    v1 = WorkerProcess(env, app="tests.apps.versioning_v1")
    try:
        v1.wait_started()
        old = _start(url, "old", OLD)  # parked in their event wait by version 1
    finally:
        assert v1.stop() == 0

    # Before the deploy: version 2 (the patch) replays every parked history; a version that renamed
    # a step they ran, without a patch, would strand every one of them.
    gate = run_cli("replay-check", "--app", "tests.apps.versioning_v2", env=env)
    assert gate.returncode == 0, gate
    assert (
        gate.stdout.splitlines()[-1]
        == f"checked {OLD} execution(s) ({OLD} in flight, 0 finished in the last 7d): {OLD} consistent"
    )
    stranded = run_cli("replay-check", "--app", "tests.apps.versioning_v4", env=env)
    assert stranded.returncode == 1, stranded
    lines = stranded.stdout.splitlines()
    assert lines[-1].endswith(f"0 consistent, {OLD} would diverge")
    assert sorted(lines[:-1]) == sorted(
        f"diverged  old-{n} (versioned, waiting) at #1: the history has 'versioned-prepare#1', "
        "the code reaches 'versioned-prepare-v4#1'"
        for n in range(OLD)
    )
    v2 = WorkerProcess(env, app="tests.apps.versioning_v2")
    try:
        v2.wait_started()
        new = _start(url, "new", NEW)  # version 2 from their start: audited before the wait
        _start(url, "parked", PARKED)  # the same, and still in flight when the checks run
        _finish(url, old + new)
        wait_until(
            lambda: _count(url, "old", "completed") == OLD and _count(url, "new", "completed") == NEW,
            what="the executions to complete",
        )
    finally:
        assert v2.stop() == 0

    # The old ones finished on the old path: no marker, no audit. The new ones took the new path.
    assert _results(url, "old") == {f"old-{n}": [n, n * 10] for n in range(OLD)}
    assert _results(url, "new") == {f"new-{n}": [n, f"audited {n}", n * 10] for n in range(NEW)}
    assert _audits(url, "old") == 0 and _audits(url, "new") == NEW
    keys = "SELECT execution_id, array_agg(step_key ORDER BY seq) FROM zart_steps GROUP BY execution_id"
    by_id = dict(query(url, keys))
    assert by_id["old-7"] == ["versioned-prepare#1", "event:go#1", "versioned-finish#1"]
    assert by_id["new-7"] == [
        "versioned-prepare#1",
        "patch:audit#1",
        "versioned-audit#1",
        "event:go#1",
        "versioned-finish#1",
    ]

    # Version 2 replays every history: the gate opens.
    same = run_cli("replay-check", "--app", "tests.apps.versioning_v2", env=env)
    assert same.returncode == 0, same
    assert same.stdout.splitlines() == [
        f"checked {OLD + NEW + PARKED} execution(s) ({PARKED} in flight, {OLD + NEW} finished in the last "
        f"7d): {OLD + NEW + PARKED} consistent"
    ]

    # Version 3 renamed the audit step without a patch: exactly the executions that audited diverge.
    renamed = run_cli("replay-check", "--app", "tests.apps.versioning_v3", env=env)
    assert renamed.returncode == 1, renamed
    lines = renamed.stdout.splitlines()
    assert lines[-1] == (
        f"checked {OLD + NEW + PARKED} execution(s) ({PARKED} in flight, {OLD + NEW} finished in the last "
        f"7d): {OLD} consistent, {NEW + PARKED} would diverge"
    )
    assert lines[:PARKED] == [  # those in flight first
        f"diverged  parked-{n} (versioned, waiting) at #3: the history has 'versioned-audit#1', "
        "the code reaches 'versioned-audit-v3#1'"
        for n in range(PARKED)
    ]
    assert sorted(lines[PARKED:-1]) == sorted(
        f"diverged  new-{n} (versioned, completed) at #3: the history has 'versioned-audit#1', "
        "the code reaches 'versioned-audit-v3#1'"
        for n in range(NEW)
    )

    as_json = run_cli("replay-check", "--app", "tests.apps.versioning_v3", "--json", env=env)
    assert as_json.returncode == 1, as_json
    *verdicts, summary = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert summary["summary"] | {"seconds": 0} == {
        "checked": OLD + NEW + PARKED,
        "in_flight": PARKED,
        "finished": OLD + NEW,
        "consistent": OLD,
        "diverged": NEW + PARKED,
        "error": 0,
        "missing": 0,
        "seconds": 0,
    }
    diverged = {v["execution"]: v for v in verdicts if v["verdict"] == "diverged"}
    assert set(diverged) == {f"new-{n}" for n in range(NEW)} | {f"parked-{n}" for n in range(PARKED)}
    assert diverged["new-3"] == {
        "execution": "new-3",
        "workflow": "versioned",
        "status": "completed",
        "verdict": "diverged",
        "position": 2,
        "recorded": "versioned-audit#1",
        "code": "versioned-audit-v3#1",
        "message": diverged["new-3"]["message"],
    }
    assert "NonDeterminism" not in diverged["new-3"]["message"]  # the error's own text, not a repr
    assert {v["verdict"] for v in verdicts if v["execution"].startswith("old-")} == {"consistent"}

    # Code that does not define the workflow: its executions would not run.
    elsewhere = run_cli(
        "replay-check", "--app", "tests.apps.core_app", "--workflow", "versioned", "--limit", "2", env=env
    )
    assert elsewhere.returncode == 1, elsewhere
    assert elsewhere.stdout.splitlines() == [
        f"missing   parked-{n} (versioned, waiting): no code for workflow 'versioned' in the --app modules: "
        "it would not run"
        for n in range(2)
    ] + ["checked 2 execution(s) (2 in flight, 0 finished in the last 7d): 0 consistent, 2 without code"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "tests.apps.no_such_app"], "cannot import app module 'tests.apps.no_such_app': "),
        (["--app", "tests.apps.core_app", "--since", "a week"], "invalid --since 'a week': a duration is"),
        (
            ["--app", "tests.apps.core_app", "--since", "0s"],
            "invalid --since '0s': must be greater than zero",
        ),
        ([], "replay-check needs --app MODULE"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(subprocess_env, args, message):
    result = run_cli("replay-check", *args, env=subprocess_env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"zart: error: {message}"), line


def test_a_database_that_cannot_be_reached_is_exit_2(subprocess_env):
    result = run_cli(
        "replay-check",
        "--app",
        "tests.apps.core_app",
        "--database-url",
        "postgresql://postgres@127.0.0.1:1/nowhere",
        env=subprocess_env,
    )
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("zart: error: cannot connect to PostgreSQL"), line


def test_a_database_without_zart_tables_is_exit_2_and_stays_without(server_url, subprocess_env):
    """A check writes nothing, not even a migration: run against production before a deploy, it must
    not apply the new code's migrations."""
    name, url = _create_database(server_url)
    try:
        result = run_cli(
            "replay-check", "--app", "tests.apps.core_app", "--database-url", url, env=subprocess_env
        )
        assert result.returncode == 2, result
        (line,) = result.stderr.splitlines()
        assert line.startswith("zart: error: the database at ") and line.endswith(
            "has no Zart tables: nothing was recorded there (`zart migrate` creates them)"
        ), line
        assert scalar(url, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'zart%'") == 0
    finally:
        _drop_database(server_url, name)


def test_limit_must_be_positive(subprocess_env):
    result = run_cli("replay-check", "--app", "tests.apps.core_app", "--limit", "0", env=subprocess_env)
    assert result.returncode == 2 and "Usage: " in result.stderr


# -- the verdicts, on histories written here ----------------------------------------------------------

ORDER = {"order_id": "9", "amount": 2.5, "items": ["mug", "pot"]}
# What order_fulfillment recorded, key by key: (key, kind, status, output)
FULFILLED = [
    ("validate-address#1", "step", "completed", '"address of order 9 is deliverable"'),
    ("process-payment#1", "step", "completed", '"txn-x"'),
    ("sleep:warehouse-settle#1", "sleep", "completed", None),
    ("event:shipment_ready#1", "event", "completed", '{"tracking_number": "T9"}'),
    ("render-invoice#1", "step", "completed", '"invoice"'),
    ("print-shipping-label#1", "step", "completed", '"label"'),
    ("pack-order-item[0]", "step", "completed", "3"),
    ("pack-order-item[1]", "step", "completed", "3"),
]


def _recorded(
    entries: list[tuple[str, str, str, str | None]],
    *,
    workflow: str = "order-fulfillment",
    status: str = "running",
    value: object = ORDER,
    error_type: str | None = None,
    gaps: tuple[int, ...] = (),
) -> RecordedExecution:
    """An execution with this history (the entries at positions 0, 1, ..., skipping `gaps`)."""
    positions = [p for p in range(len(entries) + len(gaps)) if p not in gaps]
    history = [
        Checkpoint(key, seq, status_, output, '{"type": "ConnectionError", "message": "down"}', kind)
        if status_ == "failed"
        else Checkpoint(key, seq, status_, output, None, kind)
        for seq, (key, kind, status_, output) in zip(positions, entries, strict=True)
    ]
    return RecordedExecution("e-1", workflow, status, orjson.dumps(value).decode(), error_type, history)


def _verdict(recorded: RecordedExecution) -> Verdict:
    (verdict,) = check_executions([[recorded]])
    return verdict


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param(FULFILLED, id="the whole history"),
        pytest.param(FULFILLED[:1], id="up to a step not recorded yet"),
        pytest.param([*FULFILLED[:2], ("sleep:warehouse-settle#1", "sleep", "waiting", None)], id="asleep"),
        pytest.param([*FULFILLED[:3], ("event:shipment_ready#1", "event", "waiting", None)], id="waiting"),
        pytest.param(FULFILLED[:3], id="before its event wait"),
        pytest.param(FULFILLED[:5], id="one branch of the fan-out recorded"),
        pytest.param(FULFILLED[:7], id="one item of the loop recorded"),
        pytest.param([], id="nothing recorded yet"),
    ],
)
def test_a_history_the_code_replays_is_consistent(entries):
    verdict = _verdict(_recorded(entries))
    assert (verdict.verdict, verdict.message) == ("consistent", None)


def test_a_fan_out_with_a_branch_missing_in_the_middle_is_consistent():
    entries = [*FULFILLED[:4], FULFILLED[5]]  # the label recorded, the invoice still running
    assert _verdict(_recorded(entries, gaps=(4,))).verdict == "consistent"


def test_another_key_is_a_divergence_with_both_keys():
    entries = [FULFILLED[0], ("charge-card#1", "step", "completed", '"txn"'), *FULFILLED[2:]]
    verdict = _verdict(_recorded(entries))
    assert (verdict.verdict, verdict.position, verdict.recorded_key, verdict.code_key) == (
        "diverged",
        1,
        "charge-card#1",
        "process-payment#1",
    )
    assert "replay reached 'process-payment#1' at position 2" in (verdict.message or "")


def test_code_that_ends_before_its_history_diverges():
    entries = [*FULFILLED, ("gift-wrap#1", "step", "completed", "true")]
    verdict = _verdict(_recorded(entries, status="completed"))
    assert (verdict.verdict, verdict.position, verdict.recorded_key, verdict.code_key) == (
        "diverged",
        8,
        "gift-wrap#1",
        None,
    )


def test_a_recorded_failure_raises_step_failed_as_a_replay_does():
    entries = [FULFILLED[0], ("process-payment#1", "step", "failed", None)]
    # The execution failed with it: the replay fails as it did.
    assert _verdict(_recorded(entries, status="failed", error_type="StepFailed")).verdict == "consistent"
    # Recorded as completed, it would now fail: an error of that execution.
    verdict = _verdict(_recorded(entries, status="completed"))
    assert verdict.verdict == "error"
    assert verdict.message == "StepFailed: step 'process-payment#1' failed: ConnectionError: down"


def test_code_that_raises_is_an_error_of_that_execution_only():
    broken = _recorded(FULFILLED[:2], value={"amount": 1})  # no order_id: KeyError in the body
    fine = _recorded(FULFILLED[:2])
    verdicts = list(check_executions([[broken, fine]]))
    assert [(v.verdict, v.message) for v in verdicts] == [
        ("error", "KeyError: 'order_id'"),
        ("consistent", None),
    ]


def test_a_workflow_without_code_is_missing():
    verdict = _verdict(_recorded(FULFILLED[:1], workflow="gone-since"))
    assert verdict.verdict == "missing"
    assert verdict.message == "no code for workflow 'gone-since' in the --app modules: it would not run"


@zart.step("replay-check-effect")
def _effect() -> str:
    raise AssertionError("a replay-check ran a step")


@zart.workflow("replay-check-catches")
async def _catches_its_divergence() -> str:
    with contextlib.suppress(zart.NonDeterminismError):
        await _effect()
    return "went on"


@zart.workflow("replay-check-stalls")
async def _stalls() -> None:
    await trio.sleep(60)  # not durable: a replay of it would hold the check


def test_nothing_runs_and_a_caught_divergence_still_diverges():
    # Past the history, the step does not run: the check ends there.
    assert _verdict(_recorded([], workflow="replay-check-catches", value=None)).verdict == "consistent"
    other = [("something-else#1", "step", "completed", "1")]
    verdict = _verdict(_recorded(other, workflow="replay-check-catches", value=None))
    assert (verdict.verdict, verdict.recorded_key, verdict.code_key) == (
        "diverged",
        "something-else#1",
        "replay-check-effect#1",
    )


def test_a_replay_that_does_not_end_is_an_error(monkeypatch):
    monkeypatch.setattr("zart.replay_check.REPLAY_SECONDS", 0.05)
    verdict = _verdict(_recorded([], workflow="replay-check-stalls", value=None))
    assert verdict.verdict == "error"
    assert verdict.message == (
        "the replay did not end within 0.05 s: the workflow waits for something that is not durable"
    )


@pytest.mark.parametrize(
    ("version", "entries", "expected"),
    [
        (2, [("patching-prepare#1", "step", "completed", '"prepared"')], "consistent"),
        (
            2,
            [("patching-prepare#1", "step", "completed", '"p"'), ("event:go#1", "event", "waiting", None)],
            "consistent",
        ),
        (
            2,
            [
                ("patching-prepare#1", "step", "completed", '"p"'),
                ("patch:add-step#1", "patch", "completed", "true"),
                ("patching-added#1", "step", "completed", '"added"'),
                ("event:go#1", "event", "completed", "null"),
            ],
            "consistent",
        ),
        (
            3,
            [("patching-prepare#1", "step", "completed", '"p"'), ("event:go#1", "event", "waiting", None)],
            "diverged",
        ),
        (
            3,
            [
                ("patching-prepare#1", "step", "completed", '"p"'),
                ("patch:add-step#1", "patch", "completed", "true"),
                ("patching-added#1", "step", "completed", '"added"'),
            ],
            "consistent",
        ),
        (
            1,
            [
                ("patching-prepare#1", "step", "completed", '"p"'),
                ("patch:add-step#1", "patch", "completed", "true"),
            ],
            "diverged",
        ),
    ],
)
def test_patches_replay_as_recorded(monkeypatch, version, entries, expected):
    monkeypatch.setitem(patching_app.CODE, "version", version)
    assert _verdict(_recorded(entries, workflow="patching", value="before")).verdict == expected


def test_a_patched_execution_whose_worker_is_killed_keeps_its_path(fresh_database_url, subprocess_env):
    """SIGKILL of the worker once an execution took the patch's new path (marker and audit step
    committed, the execution parked in its wait): another worker replays the marker, takes the new
    path again, and no checkpointed step runs twice."""
    url = fresh_database_url
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    first = WorkerProcess(env, app="tests.apps.versioning_v2")
    try:
        first.wait_started()
        handle = zart.start("versioned", 4, id="killed-4", database_url=url)
        wait_until(lambda: handle.status() == "waiting", what="the wait, after the patched step")
        first.kill()
    finally:
        first.stop()
    second = WorkerProcess(env, app="tests.apps.versioning_v2")
    try:
        second.wait_started()
        zart.send_event(handle.id, "go", None, database_url=url)
        assert handle.result(timeout=30) == [4, "audited 4", 40]
    finally:
        second.stop()
    ran = [
        row[0]
        for row in query(
            url, "SELECT step_key FROM test_effects WHERE execution_id = %s ORDER BY id", (handle.id,)
        )
    ]
    assert ran == ["versioned-prepare#1", "versioned-audit#1", "versioned-finish#1"]
    assert (
        scalar(
            url, "SELECT count(*) FROM zart_steps WHERE execution_id = %s AND kind = 'patch'", (handle.id,)
        )
        == 1
    )
