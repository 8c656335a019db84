"""Commits whose outcome the worker could not hear: the connection was lost after the COMMIT
reached PostgreSQL (a failover, a network fault) and before its answer came back.

A relay between the worker and PostgreSQL (tests/tcpproxy.py) makes the fault exact: the test holds
the execution's row so that the worker's final commit waits for it, drops the server's replies,
lets the commit land, then cuts every connection. The worker tries the batch again, finds its task
gone (its own first try ended the execution), and must count that as done, not as a lost lease.
"""

from __future__ import annotations

import logging

import psycopg

import zart
from tests.apps import core_app as app

from .helpers import assert_no_checkpointed_step_ran_twice, scalar, wait_until
from .tcpproxy import relayed


def _waiting_on_a_lock(url: str, beginning: str = "WITH held AS MATERIALIZED") -> bool:
    """A statement that begins so waits for a lock: by default the completer's batch
    (sql.WRITE_BATCH; pg_stat_activity shows the statement's beginning)."""
    return bool(
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s",
            [f"%{beginning}%"],
        )
    )


def _claim_waiting_on_a_lock(url: str) -> bool:
    """The claim (sql.CLAIM_TASKS) waits for a lock."""
    return _waiting_on_a_lock(url, "WITH RECURSIVE continuing AS")


def test_a_final_commit_that_landed_unanswered_counts_as_done(
    fresh_database_url, monkeypatch, caplog, tmp_path
):
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    caplog.set_level(logging.INFO)
    gate = tmp_path / "gate"
    with relayed(url) as (proxy, through):
        with zart.Worker(through, lease="30s", poll_interval="0.5s"), proxy.cut_on_exit():
            handle = zart.start(app.gated_echo, {"gate": str(gate), "value": 7}, database_url=url)
            wait_until(
                lambda: scalar(url, "SELECT count(*) FROM test_effects WHERE execution_id = %s", [handle.id]),
                what="the gated step to run",
            )
            with psycopg.connect(url) as holder:  # one transaction, committed at the end of the block
                holder.execute(
                    "SELECT 1 FROM zart_execution_runs WHERE id = %s FOR UPDATE", [handle.id]
                ).fetchall()
                gate.touch()
                wait_until(lambda: _waiting_on_a_lock(url), what="the final commit to wait for the row")
                proxy.hold()  # the commit's answer will be lost
            # The row is free: the commit lands, its answer goes nowhere.
            wait_until(
                lambda: (
                    scalar(url, "SELECT status FROM zart_execution_runs WHERE id = %s", [handle.id])
                    == "completed"
                ),
                what="the final commit to land",
            )
            assert proxy.cut() > 0
            wait_until(
                lambda: "event=commit.confirmed" in caplog.text, timeout=15, what="the retry's confirmation"
            )
            assert handle.result(timeout=10) == 7
        # The worker went on and stopped cleanly: nothing was claimed in its name and left behind.
        assert scalar(url, "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL") == 0
    assert "event=lease.lost" not in caplog.text
    assert "event=database.reconnected" in caplog.text
    assert scalar(url, "SELECT count(*) FROM test_effects WHERE execution_id = %s", [handle.id]) == 1
    assert_no_checkpointed_step_ran_twice(url)


def test_a_claim_whose_answer_was_lost_does_not_strand_its_tasks(fresh_database_url, monkeypatch, caplog):
    """Item 13 again, through a real network fault: the claim's UPDATE commits, its rows never reach
    the worker; the tasks are handed back by the worker's next claim, not after the 30 s lease.

    The claim is made to wait for a lock the test holds on the executions' rows (the claim begins
    them), so that the answers are held while it is in flight and not before: holding them at any
    other moment could catch another statement (a poll's read) and leave the claim unsent.
    """
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    caplog.set_level(logging.INFO)
    with (
        relayed(url) as (proxy, through),
        zart.Worker(through, lease="30s", poll_interval="0.5s"),
        proxy.cut_on_exit(),
    ):
        handles = [zart.start(app.three_steps, {"n": i}, database_url=url, delay="1s") for i in range(5)]
        with psycopg.connect(url) as holder:  # one transaction, committed at the end of the block
            holder.execute(
                "SELECT 1 FROM zart_execution_runs WHERE id = ANY(%s) FOR UPDATE", [[h.id for h in handles]]
            ).fetchall()
            wait_until(lambda: _claim_waiting_on_a_lock(url), what="the claim to wait for the rows")
            proxy.hold()  # the claim's answer will be lost
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL") > 0,
            what="the claim to commit",
        )
        assert proxy.cut() > 0
        results = [h.result(timeout=15) for h in handles]
    assert [r["value"] for r in results] == [(i + 1) * 2 for i in range(5)]
    assert "event=claim.recovered_stranded" in caplog.text
    assert_no_checkpointed_step_ran_twice(url)
    assert "event=lease.lost" not in caplog.text
