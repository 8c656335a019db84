"""Acceptance 4: `zart prune` removes only finished executions older than the cutoff, in batches."""

from __future__ import annotations

import re
import uuid

import pytest

import zart
from zart.prune import prune

from .apps import core_app, events_app, retry_app
from .helpers import query, run_cli, scalar, wait_until

TABLES = ("zart_steps", "zart_step_attempts", "zart_events", "zart_tasks")
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def _rows(url: str, ids: list[str]) -> dict[str, int]:
    """Rows per table that belong to these executions."""
    counts = {
        "zart_execution_runs": scalar(
            url, "SELECT count(*) FROM zart_execution_runs WHERE id = ANY(%s)", (ids,)
        )
    }
    for table in TABLES:
        counts[table] = scalar(url, f"SELECT count(*) FROM {table} WHERE execution_id = ANY(%s)", (ids,))
    return counts


def _age(url: str, ids: list[str], days: int, column: str = "finished_at") -> None:
    """Move executions into the past (the clock is the only thing a test cannot wait for)."""
    query(
        url,
        f"UPDATE zart_execution_runs SET {column} = now() - make_interval(days => %s) WHERE id = ANY(%s)"
        " RETURNING id",
        (days, ids),
    )


@pytest.fixture
def history(fresh_database_url, monkeypatch):
    """Executions of every kind on a database of their own: `old` finished ones (40 days ago) to
    be pruned, and `kept` ones: recent, 29 days old, or old but not finished."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    old: list[str] = []
    kept: list[str] = []
    with zart.Worker(url, lease="2s", poll_interval="0.5s"):
        for n in range(3):
            handle = zart.start(core_app.three_steps, {"n": n}, database_url=url)
            handle.result(timeout=30)
            old.append(handle.id)
        failed = zart.start(core_app.fails, {"why": "old"}, database_url=url)
        with pytest.raises(zart.WorkflowFailed):
            failed.result(timeout=30)
        old.append(failed.id)
        timed_out = zart.start(retry_app.times_out_mid_step, database_url=url)
        with pytest.raises(zart.WorkflowTimedOut):
            timed_out.result(timeout=30)
        old.append(timed_out.id)
        # An event consumed by a wait, and one never consumed (the execution is cancelled).
        evented = zart.start(events_app.wait_for_one, {}, database_url=url)
        zart.send_event(evented.id, "go", {"n": 1}, key="k1", database_url=url)
        evented.result(timeout=30)
        old.append(evented.id)
        cancelled = zart.start(events_app.wait_for_one, {"event": "never"}, database_url=url)
        wait_until(lambda: cancelled.status() == "waiting", what="the wait")
        zart.send_event(cancelled.id, "other", database_url=url)
        zart.cancel(cancelled.id, database_url=url)
        old.append(cancelled.id)
        # Still waiting, created long ago: not finished, so never pruned.
        waiting = zart.start(events_app.wait_for_one, {"event": "later"}, database_url=url)
        wait_until(lambda: waiting.status() == "waiting", what="the wait")
        kept.append(waiting.id)
        recent = zart.start(core_app.three_steps, {"n": 9}, database_url=url)
        recent.result(timeout=30)
        kept.append(recent.id)
        almost = zart.start(core_app.three_steps, {"n": 8}, database_url=url)
        almost.result(timeout=30)
        kept.append(almost.id)
    # A task left behind by a finished execution (nothing should, but prune sweeps it anyway).
    query(
        url,
        "INSERT INTO zart_tasks (execution_id, kind, run_at)"
        " VALUES (%s, 'workflow', 'infinity') RETURNING id",
        (old[0],),
    )
    _age(url, old, 40)
    _age(url, [waiting.id], 40, "created_at")
    _age(url, [almost.id], 29)
    return url, old, kept


def test_prune_removes_only_old_finished_executions_in_batches(history, subprocess_env):
    url, old, kept = history
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    before_old, before_kept = _rows(url, old), _rows(url, kept)
    assert before_old["zart_execution_runs"] == 7
    assert before_old["zart_events"] == 2 and before_old["zart_tasks"] == 1
    assert before_old["zart_steps"] > 7 and before_old["zart_step_attempts"] > 7

    dry = run_cli("prune", "--older-than", "30d", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert re.fullmatch(r"would remove 7 execution\(s\) finished before \S+ \S+ UTC\n", dry.stdout)
    assert _rows(url, old) == before_old

    result = run_cli("prune", "--older-than", "30d", "--batch-size", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"removed 7 execution\(s\) finished before \S+ \S+ UTC in 4 batch\(es\): "
        rf"{before_old['zart_steps']} step\(s\), {before_old['zart_step_attempts']} attempt\(s\), "
        rf"2 event\(s\), 1 task\(s\)\n",
        result.stdout,
    ), result.stdout
    assert set(_rows(url, old).values()) == {0}
    assert _rows(url, kept) == before_kept
    assert zart.get(kept[0], database_url=url).status() == "waiting"  # untouched, still waiting

    again = run_cli("prune", "--older-than", "30d", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("removed 0 execution(s)") and "in 0 batch(es)" in again.stdout
    # A shorter age takes the 29-day-old execution too, and only it.
    shorter = run_cli("prune", "--older-than", "28d", env=env)
    assert shorter.stdout.startswith("removed 1 execution(s)"), shorter.stdout
    assert _rows(url, kept[2:])["zart_execution_runs"] == 0
    assert _rows(url, kept[:2]) == _rows(url, kept[:2]) | {"zart_execution_runs": 2}


def test_each_batch_is_its_own_committed_transaction(history):
    url, old, _ = history
    seen: list[tuple[int, int]] = []

    def on_batch(total, removed):
        # Seen from another connection: the batch is committed before the next one starts.
        left = scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE id = ANY(%s)", (old,))
        seen.append((removed, left))

    result = prune(url, 30 * 86400, batch_size=3, on_batch=on_batch)
    assert seen == [(3, 4), (3, 1), (1, 0)]
    assert (result.executions, result.batches, result.events, result.tasks) == (7, 3, 2, 1)


def test_prune_uses_the_finished_index(fresh_database_url):
    plan = "\n".join(
        row[0]
        for row in query(
            fresh_database_url,
            "EXPLAIN SELECT id FROM zart_execution_runs"
            " WHERE status IN ('completed', 'failed', 'timed_out', 'cancelled') AND finished_at < now()"
            " ORDER BY finished_at LIMIT 1000",
        )
    )
    assert "zart_execution_runs_finished_idx" in plan, plan


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("age", ["30", "3x", "-1d", "0s", ""])
def test_prune_bad_duration(subprocess_env, database_url, age):
    before = scalar(database_url, "SELECT count(*) FROM zart_execution_runs")
    result = run_cli("prune", "--older-than", age, env=subprocess_env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr.startswith(f"zart: error: invalid --older-than {age!r}")
        and result.stderr.count("\n") == 1
    )
    assert "250ms, 2s, 1.5s, 5m, 1h, 1d" in result.stderr
    assert scalar(database_url, "SELECT count(*) FROM zart_execution_runs") == before


def test_prune_usage_errors(subprocess_env):
    missing = run_cli("prune", env=subprocess_env)
    assert missing.returncode == 2 and "Missing option '--older-than'" in missing.stderr
    zero = run_cli("prune", "--older-than", "1d", "--batch-size", "0", env=subprocess_env)
    assert zero.returncode == 2 and "--batch-size" in zero.stderr


def test_prune_unreachable_database(subprocess_env):
    result = run_cli("prune", "--older-than", "1d", "--database-url", UNREACHABLE, env=subprocess_env)
    assert result.returncode == 1
    assert result.stderr.startswith("zart: error: cannot connect to PostgreSQL at ")
    assert result.stderr.count("\n") == 1


def test_prune_python_api_rejects_bad_arguments(database_url):
    with pytest.raises(ValueError, match="batch size"):
        prune(database_url, 60, batch_size=0)
    with pytest.raises(ValueError, match="greater than zero"):
        prune(database_url, 0)


def test_prune_leaves_other_executions_of_the_session_alone(database_url, worker):
    """On a shared database, a prune with a long age removes nothing recent."""
    handle = zart.start(core_app.three_steps, {"n": 1}, id=f"prune-{uuid.uuid4()}", database_url=database_url)
    handle.result(timeout=30)
    prune(database_url, 365 * 86400)
    assert handle.status() == "completed"
