"""Operating executions after the fact (zart.operating): resume, fork, pause, unpause, against real
worker processes. The apps (tests/apps/repair_v1.py, repair_v2.py) record each step body's run in
test_effects, so a test counts what ran again and what did not."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterator

import pytest

import zart

from .helpers import WorkerProcess, query, scalar, wait_until


@pytest.fixture
def v1(subprocess_env) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(subprocess_env, app="tests.apps.repair_v1")
    worker.wait_started()
    yield worker
    worker.stop()


@pytest.fixture
def v2(subprocess_env) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(subprocess_env, app="tests.apps.repair_v2")
    worker.wait_started()
    yield worker
    worker.stop()


def effects(url: str, execution_id: str) -> list[str]:
    """The step bodies that ran for this execution, in order (one per run of a body)."""
    return [
        row[0]
        for row in query(
            url, "SELECT step_key FROM test_effects WHERE execution_id = %s ORDER BY id", (execution_id,)
        )
    ]


def history(url: str, execution_id: str) -> list[tuple[str, str]]:
    return query(
        url, "SELECT step_key, status FROM zart_steps WHERE execution_id = %s ORDER BY seq", (execution_id,)
    )


def new_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_fix_and_resume_runs_on_from_the_failed_step(database_url, subprocess_env, v1):
    """The third of five steps fails after its retries (a bug); with the fix deployed (a second
    app module in a new worker), resume runs steps 3-5 only, with a fresh retry budget."""
    handle = zart.start("repair-five", 1, id=new_id("fix"), database_url=database_url)
    with pytest.raises(zart.WorkflowFailed, match="ZeroDivisionError"):
        handle.result(timeout=30)
    assert effects(database_url, handle.id) == ["repair-a#1", "repair-b#1"] + ["repair-c#1"] * 3
    v1.stop()
    worker = WorkerProcess(subprocess_env, app="tests.apps.repair_v2")
    try:
        worker.wait_started()
        resumed = zart.resume(handle.id, database_url=database_url)
        assert resumed.id == handle.id
        assert resumed.result(timeout=30) == ((1 + 1) * 2 - 1 + 100) * 10
    finally:
        worker.stop()
    ran = effects(database_url, handle.id)
    assert ran == ["repair-a#1", "repair-b#1"] + ["repair-c#1"] * 4 + ["repair-d#1", "repair-e#1"]
    info = zart.get(handle.id, database_url=database_url).info()
    assert info.status == "completed" and info.resumes == 1 and info.error is None
    attempts = query(
        database_url,
        "SELECT attempt, outcome, counts FROM zart_step_attempts"
        " WHERE execution_id = %s AND step_key = 'repair-c#1' ORDER BY attempt",
        (handle.id,),
    )
    # The first three stay on record, no longer counted; the fourth is the fresh budget's first.
    assert attempts == [
        (1, "failed", False),
        (2, "failed", False),
        (3, "failed", False),
        (4, "succeeded", True),
    ]


def test_resume_after_a_crash_mid_way_does_not_run_a_checkpointed_step_again(database_url, subprocess_env):
    """Durability of a resumed run: its worker is SIGKILLed in the gated step; another worker
    finishes it, and no checkpointed step (before or after the resume) runs twice."""
    gate = f"/tmp/zart-gate-{uuid.uuid4().hex}"
    worker = WorkerProcess(subprocess_env, app="tests.apps.repair_v2")
    worker.wait_started()
    handle = zart.start("repair-gated", {"n": 5, "gate": gate}, id=new_id("crash"), database_url=database_url)
    wait_until(lambda: "repair-slow#1" in effects(database_url, handle.id), what="the slow step to start")
    zart.cancel(handle.id, database_url=database_url)
    assert handle.status() == "cancelled"
    zart.resume(handle.id, database_url=database_url)
    wait_until(
        lambda: effects(database_url, handle.id).count("repair-slow#1") == 2, what="the slow step again"
    )
    worker.kill()
    other = WorkerProcess(subprocess_env, app="tests.apps.repair_v2")
    try:
        other.wait_started()
        open(gate, "w").close()
        assert handle.result(timeout=30) == [6, "opened", 12]
    finally:
        other.stop()
    ran = effects(database_url, handle.id)
    assert ran.count("repair-a#1") == 1  # checkpointed before the cancel: never again
    assert ran.count("repair-b#1") == 1
    assert ran.count("repair-slow#1") == 3  # cut by the cancel, then by the kill: in flight both times


def test_fork_runs_from_the_chosen_step_and_leaves_the_original_alone(database_url, v2):
    original = zart.start("repair-five", 2, id=new_id("orig"), database_url=database_url)
    assert original.result(timeout=30) == ((2 + 1) * 2 - 1 + 100) * 10
    before = history(database_url, original.id)
    forked = zart.fork(original.id, from_step="repair-c#1", id=new_id("forked"), database_url=database_url)
    assert forked.result(timeout=30) == original.result()
    assert effects(database_url, forked.id) == ["repair-c#1", "repair-d#1", "repair-e#1"]
    assert history(database_url, forked.id) == before  # 1-2 copied, 3-5 recorded anew
    copied = query(
        database_url,
        "SELECT f.step_key, f.finished_at = o.finished_at FROM zart_steps f JOIN zart_steps o"
        " ON o.step_key = f.step_key AND o.execution_id = %s WHERE f.execution_id = %s ORDER BY f.seq",
        (original.id, forked.id),
    )
    assert copied[:2] == [("repair-a#1", True), ("repair-b#1", True)]
    assert [same for _, same in copied[2:]] == [False, False, False]
    assert history(database_url, original.id) == before
    assert effects(database_url, original.id) == [
        "repair-a#1",
        "repair-b#1",
        "repair-c#1",
        "repair-d#1",
        "repair-e#1",
    ]
    info, source = forked.info(), original.info()
    assert (info.forked_from, info.forked_at) == (original.id, "repair-c#1")
    assert source.forks == (forked.id,)
    # By position: 0 runs everything again, the history's length runs nothing again.
    again = zart.fork(original.id, from_step=0, database_url=database_url)
    assert again.result(timeout=30) == original.result()
    assert len(effects(database_url, again.id)) == 5
    end = zart.fork(original.id, from_step=5, database_url=database_url)
    assert end.result(timeout=30) == original.result()
    assert effects(database_url, end.id) == []


def test_pause_during_a_long_step_keeps_its_checkpoint_and_runs_nothing_more(database_url, v2, tmp_path):
    gate = tmp_path / "gate"
    handle = zart.start(
        "repair-gated", {"n": 1, "gate": str(gate)}, id=new_id("pause"), database_url=database_url
    )
    wait_until(lambda: "repair-slow#1" in effects(database_url, handle.id), what="the long step")
    assert zart.pause(handle.id, database_url=database_url) is True
    assert zart.pause(handle.id, database_url=database_url) is False  # already paused
    assert handle.status() == "paused"
    gate.touch()
    wait_until(
        lambda: ("repair-slow#1", "completed") in history(database_url, handle.id),
        what="the long step's checkpoint",
    )
    # The step in flight finished and was checkpointed; for 2 s nothing else runs.
    time.sleep(2)  # an absence is what is checked: nothing may happen in this window
    assert effects(database_url, handle.id) == ["repair-a#1", "repair-slow#1"]
    assert handle.status() == "paused"
    assert [
        row[0]
        for row in query(
            database_url, "SELECT id FROM zart_execution_runs WHERE paused AND id = %s", (handle.id,)
        )
    ]
    assert any(info.id == handle.id for info in zart.list(status="paused", database_url=database_url))
    assert zart.unpause(handle.id, database_url=database_url) is True
    assert handle.result(timeout=30) == [2, "opened", 4]
    assert effects(database_url, handle.id) == ["repair-a#1", "repair-slow#1", "repair-b#1"]
    # The attempt whose start went with the checkpoint that found the pause never ran its step.
    assert query(
        database_url,
        "SELECT attempt, outcome FROM zart_step_attempts WHERE execution_id = %s AND step_key = 'repair-b#1'"
        " ORDER BY attempt",
        (handle.id,),
    ) in ([(1, "succeeded")], [(1, "paused"), (2, "succeeded")])


def test_a_paused_execution_whose_worker_is_killed_finishes_elsewhere_once_unpaused(
    database_url, subprocess_env, tmp_path
):
    """Pause during the long step, SIGKILL the worker before the step ends: the task stays with
    the dead worker, hidden by the pause. Unpaused, another worker takes it over (after the lease)
    and finishes it; the step checkpointed before the pause never runs again."""
    gate = tmp_path / "gate"
    worker = WorkerProcess(subprocess_env, app="tests.apps.repair_v2")
    worker.wait_started()
    handle = zart.start(
        "repair-gated", {"n": 7, "gate": str(gate)}, id=new_id("killed"), database_url=database_url
    )
    wait_until(lambda: "repair-slow#1" in effects(database_url, handle.id), what="the long step")
    zart.pause(handle.id, database_url=database_url)
    worker.kill()
    other = WorkerProcess(subprocess_env, app="tests.apps.repair_v2")
    try:
        other.wait_started()
        assert handle.status() == "paused"
        gate.touch()
        zart.unpause(handle.id, database_url=database_url)
        assert handle.result(timeout=30) == [8, "opened", 16]
    finally:
        other.stop()
    assert effects(database_url, handle.id) == ["repair-a#1", "repair-slow#1", "repair-slow#1", "repair-b#1"]


def test_pause_while_sleeping_then_unpause_after_the_deadline_goes_on_at_once(database_url, v2):
    handle = zart.start("repair-sleeper", {"n": 3, "seconds": 1}, id=new_id("nap"), database_url=database_url)
    wait_until(lambda: handle.status() == "sleeping", what="the sleep")
    zart.pause(handle.id, database_url=database_url)
    wake_at = scalar(
        database_url,
        "SELECT wake_at FROM zart_steps WHERE execution_id = %s AND kind = 'sleep'",
        (handle.id,),
    )
    wait_until(
        lambda: scalar(database_url, "SELECT now() > %s + interval '0.5 s'", (wake_at,)),
        what="the deadline to pass",
    )
    assert handle.status() == "paused"
    assert effects(database_url, handle.id) == ["repair-a#1"]
    began = time.monotonic()
    zart.unpause(handle.id, database_url=database_url)
    assert handle.result(timeout=30) == 8
    assert time.monotonic() - began < 2  # at once: not a poll later, not a second sleep


def test_an_execution_paused_before_it_began_begins_at_once_when_unpaused(database_url, subprocess_env):
    """Paused while pending (its start delayed): no claim admits it when it comes due, and
    unpausing wakes the claimers (a 30 s poll here: only the notification can be that quick)."""
    worker = WorkerProcess(subprocess_env, "--poll-interval", "30s", app="tests.apps.repair_v2")
    try:
        worker.wait_started()
        handle = zart.start("repair-five", 5, id=new_id("early"), delay="1s", database_url=database_url)
        zart.pause(handle.id, database_url=database_url)
        wait_until(
            lambda: scalar(
                database_url,
                "SELECT now() > run_at + interval '0.5 s' FROM zart_tasks WHERE execution_id = %s",
                (handle.id,),
            ),
            what="its start to come due",
        )
        assert handle.status() == "paused"
        assert effects(database_url, handle.id) == []
        began = time.monotonic()
        zart.unpause(handle.id, database_url=database_url)
        assert handle.result(timeout=30) == ((5 + 1) * 2 - 1 + 100) * 10
        assert time.monotonic() - began < 5
    finally:
        worker.stop()


def test_bad_operations_say_what_is_wrong_and_write_nothing(database_url, v2):
    done = zart.start("repair-five", 4, id=new_id("done"), database_url=database_url)
    done.result(timeout=30)
    rows_before = scalar(database_url, "SELECT count(*) FROM zart_execution_runs")
    with pytest.raises(zart.ExecutionNotResumable, match="it is completed"):
        zart.resume(done.id, database_url=database_url)
    with pytest.raises(zart.ExecutionFinished, match="already completed"):
        zart.pause(done.id, database_url=database_url)
    with pytest.raises(zart.StepNotInHistory, match=r"no such key.*'repair-a#1'"):
        zart.fork(done.id, from_step="repair-z#1", database_url=database_url)
    with pytest.raises(zart.StepNotInHistory, match="positions 0 to 5"):
        zart.fork(done.id, from_step=6, database_url=database_url)
    with pytest.raises(TypeError, match="from_step must be"):
        zart.fork(done.id, from_step=1.5, database_url=database_url)  # type: ignore[arg-type]
    with pytest.raises(zart.DuplicateExecution, match="exists"):
        zart.fork(done.id, from_step=0, id=done.id, database_url=database_url)
    for operation in (zart.resume, zart.pause, zart.unpause):
        with pytest.raises(zart.ExecutionNotFound, match="no execution with id 'nope'"):
            operation("nope", database_url=database_url)
    with pytest.raises(zart.ExecutionNotFound):
        zart.fork("nope", from_step=0, database_url=database_url)
    running = zart.start(
        "repair-sleeper", {"n": 1, "seconds": 60}, id=new_id("busy"), database_url=database_url
    )
    wait_until(lambda: running.status() == "sleeping", what="the sleep")
    with pytest.raises(zart.ExecutionNotResumable, match="it is sleeping"):
        zart.resume(running.id, database_url=database_url)
    zart.pause(running.id, database_url=database_url)
    with pytest.raises(zart.ExecutionNotResumable, match=r"it is paused \(unpause it\)"):
        zart.resume(running.id, database_url=database_url)
    assert scalar(database_url, "SELECT count(*) FROM zart_execution_runs") == rows_before + 1
    zart.cancel(running.id, database_url=database_url)


def test_operations_at_random_while_two_workers_run(database_url, subprocess_env):
    """200 executions; pause, unpause, cancel and resume at random while two workers run them. Every
    execution ends completed (with the right result) or cancelled, and no step ran again once its
    checkpoint was committed: every run of a step's body is an attempt on record, at most one
    attempt of each step succeeded, and none began after it."""
    rng = random.Random(1234)
    workers = [WorkerProcess(subprocess_env, app="tests.apps.repair_v2") for _ in range(2)]
    ids = [new_id(f"race-{n}") for n in range(200)]
    try:
        for worker in workers:
            worker.wait_started()
        handles = [
            zart.start(
                "repair-sleeper",
                {"n": n, "seconds": rng.uniform(0.2, 2)},
                id=ids[n],
                database_url=database_url,
            )
            for n in range(200)
        ]
        operations = [zart.pause, zart.unpause, zart.cancel, zart.resume, zart.unpause]
        expected = (zart.ExecutionFinished, zart.ExecutionNotResumable)
        deadline = time.monotonic() + 4
        took: dict[str, int] = {}
        while time.monotonic() < deadline:
            operation = rng.choice(operations)
            try:
                if operation(rng.choice(ids), database_url=database_url):
                    took[operation.__name__] = took.get(operation.__name__, 0) + 1
            except expected:
                pass
        assert all(took.get(name, 0) >= 5 for name in ("pause", "unpause", "cancel", "resume")), took
        for execution_id in ids:  # let the paused ones end too
            with contextlib.suppress(*expected):
                zart.unpause(execution_id, database_url=database_url)

        def ended() -> bool:
            return all(handle.status() in ("completed", "cancelled") for handle in handles)

        wait_until(ended, 60, interval=0.2, what="every execution to end")
    finally:
        for worker in workers:
            worker.stop()
    outcomes = {handle.id: handle.info() for handle in handles}
    for n, execution_id in enumerate(ids):
        info = outcomes[execution_id]
        if info.status == "completed":
            assert info.result == (n + 1) * 2
            assert [key for key, _ in history(database_url, execution_id)] == [
                "repair-a#1",
                "sleep:nap#1",
                "repair-b#1",
            ]
        else:
            assert info.error["type"] == "Cancelled"
    rows = query(
        database_url,
        "SELECT a.execution_id, a.step_key, count(*), count(*) FILTER (WHERE a.outcome = 'succeeded'),"
        " max(a.attempt) FILTER (WHERE a.outcome = 'succeeded'), max(a.attempt),"
        " (SELECT count(*) FROM test_effects e"
        "  WHERE e.execution_id = a.execution_id AND e.step_key = a.step_key)"
        " FROM zart_step_attempts a WHERE a.execution_id = ANY(%s) GROUP BY 1, 2",
        (ids,),
    )
    for execution_id, key, attempts, succeeded, last_success, last, ran in rows:
        assert ran <= attempts, (execution_id, key)
        assert succeeded <= 1, (execution_id, key)
        if succeeded:
            assert last == last_success, (execution_id, key, "an attempt began after the checkpoint")
    statuses = [info.status for info in outcomes.values()]
    assert statuses.count("completed") >= 20, statuses
