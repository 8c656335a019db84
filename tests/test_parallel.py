"""Parallel steps and durable loops (issue 5), with real worker processes and a real SIGKILL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

import zart

from .apps import fanout_app
from .helpers import WorkerProcess, query, scalar, wait_until

IDEMPOTENT_EFFECTS_SQL = (
    "CREATE TABLE IF NOT EXISTS test_idempotent_effects (idempotency_key text PRIMARY KEY)"
)


@pytest.fixture
def idempotent_effects(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(IDEMPOTENT_EFFECTS_SQL)
    return database_url


def effects(url: str, execution_id: str) -> dict[str, int]:
    return dict(
        query(
            url,
            "SELECT step_key, count(*) FROM test_effects WHERE execution_id = %s GROUP BY step_key",
            (execution_id,),
        )
    )


def test_parallel_naps_run_concurrently_on_two_worker_processes(database_url, subprocess_env):
    workers = [WorkerProcess(subprocess_env, app="tests.apps.fanout_app") for _ in range(2)]
    try:
        for process in workers:
            process.wait_started()
        handle = zart.start(fanout_app.three_naps, database_url=database_url)
        results = handle.result(timeout=30)
    finally:
        for process in workers:
            process.stop()
    assert [r.split(" ")[0] for r in results] == ["a", "b", "c"]
    info = handle.info()
    elapsed = (info.finished_at - info.created_at).total_seconds()
    assert elapsed < 0.75, f"3 x 300 ms in parallel took {elapsed:.3f} s"
    keys = query(
        database_url,
        "SELECT step_key, seq FROM zart_steps WHERE execution_id = %s ORDER BY seq",
        (handle.id,),
    )
    assert keys == [("nap-300ms#1", 0), ("nap-300ms#2", 1), ("nap-300ms#3", 2)]


@pytest.mark.parametrize("fanout", ["32", "0"], ids=["inline", "as-tasks"])
def test_sigkill_after_two_of_three_branches_reruns_only_the_third(
    database_url, subprocess_env, tmp_path, fanout
):
    """Inline (the branches run in the workflow's worker) or as branch tasks, a finished branch's
    checkpoint is durable while a sibling still runs: only the branch in flight runs again."""
    gate = tmp_path / "gate"
    first = WorkerProcess(subprocess_env, "--inline-fanout", fanout, app="tests.apps.fanout_app")
    try:
        first.wait_started()
        handle = zart.start(fanout_app.two_quick_one_gated, {"gate": str(gate)}, database_url=database_url)
        wait_until(
            lambda: (
                scalar(
                    database_url,
                    "SELECT count(*) FROM zart_steps WHERE execution_id = %s AND status = 'completed'",
                    (handle.id,),
                )
                == 2
                and effects(database_url, handle.id).get("gated-branch#1") == 1
            ),
            what="two branches checkpointed and the third running",
        )
        first.kill()
    finally:
        first.stop()
    gate.touch()
    second = WorkerProcess(subprocess_env, "--inline-fanout", fanout, app="tests.apps.fanout_app")
    try:
        second.wait_started()
        assert handle.result(timeout=30) == ["A", "B", "gate opened"]
    finally:
        second.stop()
    assert effects(database_url, handle.id) == {"quick#1": 1, "quick#2": 1, "gated-branch#1": 2}
    assert query(
        database_url,
        "SELECT attempt, outcome FROM zart_step_attempts WHERE execution_id = %s"
        " AND step_key = 'gated-branch#1' ORDER BY attempt",
        (handle.id,),
    ) == [(1, "abandoned"), (2, "succeeded")]


def test_map_over_1000_items_with_a_sigkill_in_the_middle(idempotent_effects, subprocess_env):
    url = idempotent_effects
    first = WorkerProcess(subprocess_env, "--concurrency", "40", app="tests.apps.fanout_app")
    try:
        first.wait_started()
        handle = zart.start(
            fanout_app.square_all, {"count": 1000, "concurrency": 20, "slow": 0.005}, database_url=url
        )

        def checkpointed() -> int:
            return scalar(url, "SELECT count(*) FROM zart_steps WHERE execution_id = %s", (handle.id,))

        wait_until(lambda: checkpointed() >= 300, timeout=60, what="300 items checkpointed")
        first.kill()
    finally:
        first.stop()
    before_kill = {
        row[0] for row in query(url, "SELECT step_key FROM zart_steps WHERE execution_id = %s", (handle.id,))
    }
    assert 300 <= len(before_kill) < 1000
    second = WorkerProcess(subprocess_env, "--concurrency", "40", app="tests.apps.fanout_app")
    try:
        second.wait_started()
        results = handle.result(timeout=120)
    finally:
        second.stop()
    assert results == [n * n for n in range(1000)]
    counts = effects(url, handle.id)
    assert set(counts) == {f"process-item[{i}]" for i in range(1000)}
    repeated = {key for key, count in counts.items() if count > 1}
    # Only items in flight at the kill ran again (at most the window of 20), never a checkpointed one.
    abandoned = {
        row[0]
        for row in query(
            url,
            "SELECT step_key FROM zart_step_attempts WHERE execution_id = %s AND outcome = 'abandoned'",
            (handle.id,),
        )
    }
    assert repeated <= abandoned and len(abandoned) <= 20
    assert not (repeated & before_kill)
    assert all(counts[key] == 1 for key in before_kill)
    # The side effect keyed by zart.context().idempotency_key happened exactly once per item.
    assert (
        scalar(
            url,
            "SELECT count(*) FROM test_idempotent_effects WHERE idempotency_key LIKE %s",
            (f"{handle.id}/%",),
        )
        == 1000
    )


def test_200_fan_outs_of_10_branches_wake_each_continuation_exactly_once(fresh_database_url, subprocess_env):
    url = fresh_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        # Audit every claim of a workflow task: a continuation scheduled twice would be claimed twice.
        conn.execute("CREATE TABLE test_claims (execution_id text, claims int)")
        conn.execute(
            """CREATE FUNCTION test_audit_claim() RETURNS trigger AS $$
               BEGIN
                 IF NEW.kind = 'workflow' AND NEW.claims > OLD.claims THEN
                   INSERT INTO test_claims VALUES (NEW.execution_id, NEW.claims);
                 END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql"""
        )
        conn.execute(
            "CREATE TRIGGER test_audit_claim AFTER UPDATE ON zart_tasks"
            " FOR EACH ROW EXECUTE FUNCTION test_audit_claim()"
        )
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    workers = [
        # branches as tasks (the continuation is what this test is about)
        WorkerProcess(
            env, "--concurrency", "100", "--lease", "10s", "--inline-fanout", "0", app="tests.apps.fanout_app"
        )
        for _ in range(2)
    ]
    try:
        for process in workers:
            process.wait_started()
        handles = [zart.start(fanout_app.fan_out_ten, database_url=url) for _ in range(200)]
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'") == 200,
            timeout=120,
            interval=0.1,
            what="200 fan-outs to complete",
        )
    finally:
        for process in workers:
            process.stop()
    assert handles[0].result(timeout=1) == sum(i * 10 for i in range(10))
    # Each execution's workflow task was claimed exactly twice: at the start and for the continuation.
    # (The lease is long enough here that no claim can come from a lapsed lease on a loaded machine.)
    assert query(
        url,
        "SELECT count(*), min(n), max(n)"
        " FROM (SELECT count(*) AS n FROM test_claims GROUP BY execution_id) c",
    ) == [(200, 2, 2)]
    assert query(
        url, "SELECT step_key, count(*) FROM test_effects WHERE step_key = 'after-fan-in#1' GROUP BY 1"
    ) == [("after-fan-in#1", 200)]
    assert scalar(url, "SELECT count(*) FROM test_effects") == 200 * 12  # start + 10 branches + continuation
    assert scalar(url, "SELECT count(DISTINCT (execution_id, step_key)) FROM test_effects") == 200 * 12
    assert (
        scalar(
            url,
            "SELECT count(DISTINCT worker_id) FROM zart_step_attempts WHERE step_key LIKE 'branch-work%%'",
        )
        == 2
    )
    assert scalar(url, "SELECT count(*) FROM zart_tasks") == 0


def test_one_failing_branch_raises_step_failed_after_all_finished(database_url, worker):
    handle = zart.start(fanout_app.one_branch_fails, database_url=database_url)
    result = handle.result(timeout=30)
    assert result["failed_key"] == "maybe-fail#2"
    assert result["message"] == "bad-1 cannot be found"
    assert result["outcomes"] == [
        {"key": "maybe-fail#1", "status": "completed", "result": "ok:x"},
        {
            "key": "maybe-fail#2",
            "status": "failed",
            "error_type": "LookupError",
            "message": "bad-1 cannot be found",
        },
        {"key": "maybe-fail#3", "status": "completed", "result": "ok:y"},
        {
            "key": "maybe-fail#4",
            "status": "failed",
            "error_type": "LookupError",
            "message": "bad-2 cannot be found",
        },
    ]
    assert effects(database_url, handle.id) == {f"maybe-fail#{i}": 1 for i in range(1, 5)}


def test_for_loops_and_map_use_their_own_checkpoint_keys(database_url, worker):
    handle = zart.start(fanout_app.loop_styles, {"words": ["x", "y", "z"]}, database_url=database_url)
    assert handle.result(timeout=30) == {"looped": ["X", "Y", "Z"], "mapped": ["X", "Y", "Z"]}
    keys = [
        row[0]
        for row in query(
            database_url, "SELECT step_key FROM zart_steps WHERE execution_id = %s ORDER BY seq", (handle.id,)
        )
    ]
    assert keys == ["quick#1", "quick#2", "quick#3", "quick[0]", "quick[1]", "quick[2]"]


def test_parallel_and_map_reject_bad_arguments(database_url, worker):
    @zart.workflow(f"bad-parallel-{uuid.uuid4().hex[:6]}")
    async def bad_parallel() -> None:
        await zart.parallel(fanout_app.quick("a"), "not a step call")

    handle = zart.start(bad_parallel, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed, match=r"zart\.parallel\(\) takes step calls"):
        handle.result(timeout=30)
    with pytest.raises(zart.ZartError, match="only be awaited inside a workflow"):
        import trio

        trio.run(zart.map, fanout_app.quick, ["a"])


def test_two_maps_of_the_same_step_get_their_own_keys(database_url, worker):
    handle = zart.start(fanout_app.two_maps, {"words": ["a", "b"]}, database_url=database_url)
    assert handle.result(timeout=30) == [["A", "B"], ["A", "B"]]
    assert [s.key for s in handle.steps()] == ["quick[0]", "quick[1]", "quick#2[0]", "quick#2[1]"]


def test_inline_branches_run_in_the_workflows_own_claim(fresh_database_url, monkeypatch):
    """A fan-out no wider than inline_fanout runs in the worker that holds the workflow: no branch
    task is created and the workflow task is claimed once (no continuation round trip)."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE test_branch_tasks (execution_id text)")
        conn.execute(
            """CREATE FUNCTION test_audit_branch() RETURNS trigger AS $$
               BEGIN
                 IF NEW.kind = 'step' THEN INSERT INTO test_branch_tasks VALUES (NEW.execution_id); END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql"""
        )
        conn.execute(
            "CREATE TRIGGER test_audit_branch AFTER INSERT ON zart_tasks"
            " FOR EACH ROW EXECUTE FUNCTION test_audit_branch()"
        )
    with zart.Worker(url, lease="5s", inline_fanout=16):
        handle = zart.start(fanout_app.fan_out_ten, database_url=url)
        assert handle.result(timeout=30) == sum(i * 10 for i in range(10))
    assert scalar(url, "SELECT count(*) FROM test_branch_tasks") == 0
    # The first step, the 10 branches and the step after the fan-in; each attempt on record, once.
    assert scalar(url, "SELECT count(*) FROM zart_steps WHERE execution_id = %s", (handle.id,)) == 12
    assert query(
        url,
        "SELECT count(*), count(DISTINCT step_key) FROM zart_step_attempts"
        " WHERE execution_id = %s AND outcome = 'succeeded'",
        (handle.id,),
    ) == [(12, 12)]


def test_an_inline_branch_that_retries_suspends_once_its_siblings_are_done(database_url, worker):
    """A branch whose step fails and is retried (after its back-off) does not stop its siblings: they
    finish and are checkpointed; the execution then suspends for the back-off and the replay runs
    only the branch that is left."""
    handle = zart.start(fanout_app.branch_retries_while_siblings_run, database_url=database_url)
    results = handle.result(timeout=30)
    assert results[:2] == ["A", "B"] and results[2].startswith("c done")
    assert effects(database_url, handle.id) == {
        "quick#1": 1,
        "fails-once-branch#1": 2,
        "nap-300ms#1": 1,
    }
    assert query(
        database_url,
        "SELECT attempt, outcome FROM zart_step_attempts WHERE execution_id = %s"
        " AND step_key = 'fails-once-branch#1' ORDER BY attempt",
        (handle.id,),
    ) == [(1, "failed"), (2, "succeeded")]


def test_a_refused_inline_branch_fails_its_execution_alone(fresh_database_url, monkeypatch):
    """PostgreSQL refusing one inline branch's checkpoint ends that execution `failed`
    (CheckpointRejected), not the worker: an execution started after it completes."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """CREATE FUNCTION test_refuse_branch() RETURNS trigger AS $$
               BEGIN RAISE EXCEPTION 'branch refused'; END $$ LANGUAGE plpgsql"""
        )
        conn.execute(
            "CREATE TRIGGER test_refuse_branch BEFORE INSERT ON zart_steps FOR EACH ROW"
            " WHEN (NEW.execution_id = 'refused-fan-out' AND NEW.step_key = 'branch-work#3')"
            " EXECUTE FUNCTION test_refuse_branch()"
        )
    worker = zart.Worker(url, lease="5s", poll_interval="0.5s").start()
    try:
        refused = zart.start(fanout_app.fan_out_ten, id="refused-fan-out", database_url=url)
        with pytest.raises(zart.WorkflowFailed) as failed:
            refused.result(timeout=30)
        assert failed.value.error_type == "CheckpointRejected", failed.value
        after = zart.start(fanout_app.fan_out_ten, database_url=url)
        assert after.result(timeout=30) == sum(i * 10 for i in range(10))
    finally:
        worker.stop()  # raises WorkerCrashed if the refusal had taken the worker down
