"""Transactional steps (issue 17): exactly-once writes on the application's tables, with real
workers, real SIGKILLs and a real SIGSTOP past the lease."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict

import psycopg
import pytest

import zart

from .apps import bank_app
from .helpers import SupervisorProcess, WorkerProcess, child_pids, query, scalar, wait_until

ACCOUNTS = 100
OPENING_BALANCE = 1_000


def open_accounts(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(bank_app.ACCOUNTS_SQL)
        conn.execute(
            "INSERT INTO bank_accounts SELECT g, %s FROM generate_series(0, %s) g ON CONFLICT DO NOTHING",
            (OPENING_BALANCE, ACCOUNTS - 1),
        )


@pytest.fixture
def bank(database_url: str) -> str:
    open_accounts(database_url)
    return database_url


def entries(url: str, transfer: str) -> list[tuple[int, int]]:
    return query(
        url, "SELECT account, amount FROM bank_entries WHERE transfer = %s ORDER BY amount", (transfer,)
    )


def test_a_transfer_commits_each_write_with_its_checkpoint(worker, bank):
    handle = zart.start(bank_app.transfer, {"from": 11, "to": 12, "amount": 30}, database_url=bank)
    outcome = handle.result(timeout=30)
    assert outcome["note"] == f"transfer {handle.id} on its way"
    assert entries(bank, handle.id) == [(11, -30), (12, 30)]
    steps = query(
        bank,
        "SELECT step_key, status, attempts FROM zart_steps WHERE execution_id = %s ORDER BY seq",
        (handle.id,),
    )
    assert steps == [
        ("bank-debit#1", "completed", 1),
        ("bank-notify#1", "completed", 1),
        ("bank-credit#1", "completed", 1),
    ]
    attempts = [(a.step_key, a.attempt, a.outcome) for a in handle.attempts()]
    assert attempts == [
        ("bank-debit#1", 1, "succeeded"),
        ("bank-notify#1", 1, "succeeded"),
        ("bank-credit#1", 1, "succeeded"),
    ]


def test_a_raising_transactional_step_leaves_none_of_its_writes(worker, bank):
    """retry="fixed(2, 10ms)": three attempts, each writes and raises; none of their writes remain."""
    handle = zart.start(bank_app.failing, {}, database_url=bank)
    assert handle.result(timeout=30) == "attempt 3 fails after its write"
    attempts = [(a.attempt, a.outcome, a.error_message) for a in handle.attempts()]
    assert attempts == [(n, "failed", f"attempt {n} fails after its write") for n in (1, 2, 3)]
    assert entries(bank, handle.id) == []


@pytest.mark.parametrize("fanout", [32, 0], ids=["inline", "as-tasks"])
def test_parallel_and_map_branches_each_commit_their_own_transaction(bank, fanout):
    accounts = [31, 32, 33, 34] if fanout else [35, 36, 37, 38]
    before = dict(query(bank, "SELECT id, balance FROM bank_accounts WHERE id = ANY(%s)", (accounts,)))
    with zart.Worker(bank, lease="2s", poll_interval="0.5s", inline_fanout=fanout):
        handle = zart.start(bank_app.deposits, {"accounts": accounts}, database_url=bank)
        outcome = handle.result(timeout=30)
    a, b, c, d = accounts
    assert outcome["parallel"] == [before[a] + 1, before[b] + 1]
    assert outcome["map"] == [before[a] + 3, before[b] + 3, before[c] + 2, before[d] + 2]
    assert len(entries(bank, handle.id)) == 2 and len(entries(bank, f"{handle.id}/map")) == 4
    keys = query(bank, "SELECT step_key FROM zart_steps WHERE execution_id = %s ORDER BY seq", (handle.id,))
    assert [key for (key,) in keys] == [
        "bank-deposit#1",
        "bank-deposit#2",
        *(f"bank-deposit[{i}]" for i in range(4)),
    ]


def test_serialization_failures_on_a_hot_row_are_run_again_not_counted(worker, bank):
    """50 executions bump one row at `serializable` at once: every bump lands, and no attempt failed
    (each conflict ran its transaction again)."""
    with psycopg.connect(bank, autocommit=True) as conn:
        conn.execute("UPDATE bank_accounts SET balance = 0 WHERE id = 0")
    handles = zart.start_many(bank_app.bump, [1] * 50, database_url=bank)
    results = sorted(handle.result(timeout=60) for handle in handles)
    assert results == list(range(1, 51))
    assert scalar(bank, "SELECT balance FROM bank_accounts WHERE id = 0") == 50
    outcomes = query(
        bank,
        "SELECT attempt, outcome, count(*) FROM zart_step_attempts"
        " WHERE execution_id = ANY(%s) GROUP BY 1, 2",
        ([h.id for h in handles],),
    )
    assert outcomes == [(1, "succeeded", 50)]


@pytest.mark.parametrize("in_query", [True, False], ids=["in-a-query", "in-python"])
def test_a_body_that_outlasts_its_timeout_is_rolled_back(worker, bank, in_query):
    handle = zart.start(bank_app.too_slow, in_query, database_url=bank)
    assert handle.result(timeout=30) == (
        "StepTimeout: attempt 1 of step 'bank-slow#1' exceeded the step's timeout of 0.3 s"
    )
    assert entries(bank, handle.id) == []


def test_called_outside_a_workflow_it_commits_its_own_transaction(bank, monkeypatch):
    monkeypatch.setenv("ZART_DATABASE_URL", bank)
    with psycopg.connect(bank, autocommit=True) as conn:
        conn.execute("UPDATE bank_accounts SET balance = 7 WHERE id = 0")
    assert bank_app.bump_hot_row(3) == 10
    assert scalar(bank, "SELECT balance FROM bank_accounts WHERE id = 0") == 10
    with pytest.raises(ValueError, match="after its write"):
        write_then_raise("outside-a-workflow")
    assert entries(bank, "outside-a-workflow") == []


@zart.transaction("tx-write-then-raise")
def write_then_raise(conn: psycopg.Connection, transfer: str) -> None:
    conn.execute("INSERT INTO bank_entries VALUES (%s, 1, 1, 1)", (transfer,))
    raise ValueError("raised after its write")


def test_bad_transactional_steps_fail_at_decoration():
    with pytest.raises(TypeError, match="must decorate a plain 'def'"):

        @zart.transaction("tx-async")
        async def not_plain(conn):  # pragma: no cover - never registered
            return None

    with pytest.raises(TypeError, match="must take the connection as its first parameter"):

        @zart.transaction("tx-no-connection")
        def no_connection():  # pragma: no cover - never registered
            return None

    with pytest.raises(ValueError, match="isolation must be one of 'read committed', 'repeatable read'"):
        zart.transaction("tx-snapshot", isolation="snapshot")
    with pytest.raises(ValueError, match="invalid retry policy"):
        zart.transaction("tx-retry", retry="often")


def test_a_stale_worker_cannot_commit(bank, subprocess_env, tmp_path):
    """A worker stopped (SIGSTOP) in the middle of a transactional body, past its lease: the server
    ends its transaction, another worker takes the execution over and commits the step; the stale
    worker, continued, commits nothing."""
    marker, gate = tmp_path / "marker", tmp_path / "gate"
    stale = WorkerProcess(subprocess_env, app="tests.apps.bank_app")
    try:
        stale.wait_started()
        handle = zart.start(bank_app.gated, {"marker": str(marker), "gate": str(gate)}, database_url=bank)
        wait_until(marker.exists, what="the first attempt inside its transaction")
        stale.process.send_signal(signal.SIGSTOP)
        gate.touch()
        taker = WorkerProcess(subprocess_env, app="tests.apps.bank_app")
        try:
            taker.wait_started()
            assert handle.result(timeout=60) == taker.process.pid
        finally:
            stale.process.send_signal(signal.SIGCONT)
            wait_until(
                lambda: "execution.interrupted" in stale.log() or "lease.lost" in stale.log(),
                what="the stale worker to find its transaction gone",
            )
            taker.stop()
    finally:
        stale.stop()
    assert entries(bank, handle.id) == [(1, 1)]  # one write: the taker's
    # The stale worker's attempt left no trace (its transaction was rolled back): the one on record
    # is the taker's.
    recorded = query(
        bank,
        "SELECT attempt, worker_id, outcome FROM zart_step_attempts WHERE execution_id = %s",
        (handle.id,),
    )
    assert [(attempt, worker.split(":")[1], outcome) for attempt, worker, outcome in recorded] == [
        (1, str(taker.process.pid), "succeeded")
    ]


def run_the_bank(url: str, env: dict[str, str], transfers: int, kills: int) -> None:
    """`transfers` transfers under `zart supervise --procs 2`, a worker SIGKILLed every ~0.5 s
    (`kills` at least) and one SIGSTOPped past its lease once; then the books must balance."""
    open_accounts(url)
    rng = random.Random(17)
    requests = []
    for _ in range(transfers):
        source, target = rng.sample(range(1, ACCOUNTS), 2)
        requests.append({"from": source, "to": target, "amount": rng.randint(1, 50)})
    supervisor = SupervisorProcess(env, "--procs", "2", app="tests.apps.bank_app")
    done = "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'"
    killed = stopped = 0
    try:
        supervisor.wait_workers(2)
        handles = zart.start_many(bank_app.transfer, requests, database_url=url)
        # Kills every ~0.5 s while transfers run, until `kills` (and the SIGSTOP) are done; more
        # transfers are started if they all finish first. Then the rest runs without chaos: on a slow
        # machine, a worker killed every 0.5 s spends most of its time being re-forked.
        while killed < kills or not stopped:
            pids = child_pids(supervisor.process.pid)
            if pids and not stopped and killed == kills // 2:
                victim = pids[0]
                os.kill(victim, signal.SIGSTOP)
                time.sleep(2.5)  # past the 1 s lease (and the transaction's idle timeout)
                os.kill(victim, signal.SIGCONT)
                stopped = 1
            elif pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                killed += 1
            time.sleep(0.5)  # the chaos cadence, not a wait for a condition
            if scalar(url, done) >= transfers and killed < kills:
                handles += zart.start_many(bank_app.transfer, requests[:50], database_url=url)
                transfers += 50
        wait_until(lambda: scalar(url, done) >= transfers, 120, what=f"{transfers} transfers")
        for handle in handles:
            handle.result(timeout=60)
    finally:
        assert supervisor.stop() == 0
    assert killed >= kills and stopped == 1
    assert scalar(url, done) == len(handles)
    # The books balance, and each account's balance is its opening balance plus the completed
    # transfers, as their checkpoints and inputs say.
    assert scalar(url, "SELECT sum(balance) FROM bank_accounts") == ACCOUNTS * OPENING_BALANCE
    expected: dict[int, int] = defaultdict(lambda: OPENING_BALANCE)
    for (request,) in query(url, "SELECT input FROM zart_execution_runs WHERE status = 'completed'"):
        expected[request["from"]] -= request["amount"]
        expected[request["to"]] += request["amount"]
    for account, balance in query(url, "SELECT id, balance FROM bank_accounts WHERE id > 0"):
        assert balance == expected[account], account
    # No transfer applied twice: one debit and one credit entry each, and no attempt that found
    # its entry already there (the primary key would have refused it).
    assert scalar(url, "SELECT count(*) FROM bank_entries") == 2 * len(handles)
    assert scalar(url, "SELECT count(*) FROM zart_step_attempts WHERE error_type = 'UniqueViolation'") == 0
    # A transactional step's checkpoint has exactly one successful attempt, whatever was killed.
    assert (
        scalar(
            url,
            "SELECT count(*) FROM (SELECT execution_id, step_key FROM zart_step_attempts"
            " WHERE outcome = 'succeeded' GROUP BY 1, 2 HAVING count(*) > 1) d",
        )
        == 0
    )


def test_the_bank_of_2000_transfers_balances_through_sigkills_and_a_sigstop(
    fresh_database_url, subprocess_env
):
    """The acceptance run: 2,000 transfers, a worker SIGKILLed every ~0.5 s (ten at least), one
    SIGSTOPped past its lease; about 10 s on a 2-core machine."""
    url = fresh_database_url
    run_the_bank(url, dict(subprocess_env, ZART_DATABASE_URL=url), transfers=2000, kills=10)
