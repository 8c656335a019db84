"""A PostgreSQL failover under load (issue 19): 2,000 three-step workflows run under two real
`zart supervise` processes whose URL names a primary and its synchronous standby
(`target_session_attrs=read-write`); the primary is stopped (fast) and the standby promoted
mid-run. Every execution completes, no step is checkpointed twice, only the steps in flight at the
failover run again, the backlog drains well within a lease, and nobody restarts a worker.
"""

from __future__ import annotations

import re
import time

import psycopg

import zart
from zart.pools import close_pools

from .apps import chaos_app
from .helpers import EFFECTS_TABLE_SQL, SupervisorProcess, child_pids, query, scalar, wait_until

WORKFLOWS = 2000
# Started after the failover through the test's own client pool, whose connections all went to the
# old primary: the pool must find the new one by itself.
AFTER = 50
SUPERVISORS = 2
PROCS = 1
CONCURRENCY = 25
LEASE = 30.0
# After the failover, the rest of the backlog must drain in well under a lease: no execution
# waited for a lease to run out.
DRAIN_BOUND = 20.0


def completed(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'")


def rerun_steps(url: str) -> list[tuple[str, str, int]]:
    """(execution, step, runs) of every step whose body ran more than once (the effects table)."""
    return query(
        url,
        "SELECT execution_id, step_key, count(*) FROM test_effects GROUP BY 1, 2 HAVING count(*) > 1",
    )


def runs_beyond_attempts(url: str) -> list[tuple[str, str, int, int]]:
    """Steps whose body ran more often than they have attempts on record: a run no attempt accounts
    for would be a step run again after its checkpoint."""
    return query(
        url,
        """SELECT e.execution_id, e.step_key, e.runs, coalesce(a.attempts, 0)
           FROM (SELECT execution_id, step_key, count(*) AS runs FROM test_effects GROUP BY 1, 2) e
           LEFT JOIN (SELECT execution_id, step_key, count(*) AS attempts FROM zart_step_attempts
                      GROUP BY 1, 2) a USING (execution_id, step_key)
           WHERE e.runs > coalesce(a.attempts, 0)""",
    )


def assert_each_step_checkpointed_once(url: str, steps_per_execution: int, executions: int) -> None:
    """Every step of every execution has one checkpoint, one succeeded attempt, and ran."""
    assert (
        scalar(url, "SELECT count(*) FROM zart_steps WHERE kind = 'step'") == steps_per_execution * executions
    )
    assert query(
        url,
        "SELECT count(*) FROM (SELECT execution_id, step_key FROM zart_step_attempts"
        " WHERE outcome = 'succeeded' GROUP BY 1, 2 HAVING count(*) > 1) d",
    ) == [(0,)]
    assert query(
        url,
        "SELECT count(*) FROM zart_steps s WHERE s.kind = 'step' AND NOT EXISTS (SELECT 1"
        " FROM zart_step_attempts a WHERE a.execution_id = s.execution_id AND a.step_key = s.step_key"
        " AND a.outcome = 'succeeded')",
    ) == [(0,)]
    assert query(
        url,
        "SELECT count(*) FROM zart_steps s WHERE s.kind = 'step' AND NOT EXISTS (SELECT 1 FROM test_effects e"
        " WHERE e.execution_id = s.execution_id AND e.step_key = s.step_key)",
    ) == [(0,)]


def test_2000_workflows_survive_a_failover_to_the_synchronous_standby(replicated_cluster, subprocess_env):
    cluster = replicated_cluster
    url = cluster.create_database("failover")
    zart.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(EFFECTS_TABLE_SQL)
    env = dict(subprocess_env, ZART_DATABASE_URL=url)
    supervisors = [
        SupervisorProcess(
            env,
            "--procs",
            str(PROCS),
            "--concurrency",
            str(CONCURRENCY),
            "--lease",
            f"{LEASE:g}s",
            "--poll-interval",
            "5s",
        )
        for _ in range(SUPERVISORS)
    ]
    try:
        workers = {supervisor.process.pid: supervisor.wait_workers(PROCS) for supervisor in supervisors}
        began = time.monotonic()
        zart.start_many(chaos_app.chaos, list(range(WORKFLOWS)), database_url=url)
        wait_until(
            lambda: completed(url) >= WORKFLOWS // 3, timeout=60, interval=0.05, what="a third completed"
        )
        at_failover = completed(url)
        failed_over_at = time.time()
        timing = cluster.failover()
        late = zart.start_many(chaos_app.chaos, list(range(WORKFLOWS, WORKFLOWS + AFTER)), database_url=url)
        assert len(late) == AFTER
        wait_until(
            lambda: completed(url) == WORKFLOWS + AFTER,
            timeout=90,
            interval=0.05,
            what=f"all {WORKFLOWS + AFTER} workflows",
        )
        seen_done = time.monotonic()
        # The supervisors and their workers are the ones started: none died, none was replaced.
        for supervisor in supervisors:
            assert supervisor.process.poll() is None, supervisor.log()
            assert sorted(child_pids(supervisor.process.pid)) == sorted(workers[supervisor.process.pid])
    finally:
        codes = [supervisor.stop() for supervisor in supervisors]
        close_pools(url)
    logs = [supervisor.log() for supervisor in supervisors]
    last_finished = float(scalar(url, "SELECT extract(epoch FROM max(finished_at)) FROM zart_execution_runs"))
    promoted_at = failed_over_at + timing["total"]
    drained = last_finished - promoted_at
    resumed = (
        float(
            scalar(
                url,
                "SELECT extract(epoch FROM min(finished_at)) FROM zart_execution_runs"
                " WHERE finished_at > to_timestamp(%s)",
                (promoted_at,),
            )
        )
        - promoted_at
    )
    reran = rerun_steps(url)
    counts = {
        event: sum(log.count(f"event={event}") for log in logs)
        for event in (
            "lease.lost",
            "database.lost",
            "database.reconnected",
            "claim.failing",
            "listen.lost",
            "listen.reconnected",
            "execution.interrupted",
            "heartbeat.failed",
        )
    }
    attempts = dict(
        query(url, "SELECT coalesce(outcome, 'open'), count(*) FROM zart_step_attempts GROUP BY 1")
    )
    print(
        "steps that ran again, with their attempts:",
        [
            (
                step,
                runs,
                query(
                    url,
                    "SELECT attempt, outcome, error_type FROM zart_step_attempts"
                    " WHERE execution_id = %s AND step_key = %s ORDER BY 1",
                    (execution, step),
                ),
            )
            for execution, step, runs in reran
        ],
    )
    print(
        f"\n{WORKFLOWS} workflows: {at_failover} completed at the failover"
        f" (stop {timing['stop']:.2f} s + promote {timing['promote']:.2f} s = {timing['total']:.2f} s);"
        f" the first completion after the promotion came {resumed:.2f} s after it, the last {drained:.2f} s"
        f" ({seen_done - began:.1f} s from the start); {len(reran)} step(s) ran more than once;"
        f" attempts {attempts}; log events {counts}"
    )
    assert codes == [0] * SUPERVISORS, logs
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs WHERE status <> 'completed'") == 0
    assert_each_step_checkpointed_once(url, 3, WORKFLOWS + AFTER)
    # Only the steps in flight at the failover ran again: at most one per execution the workers
    # could hold at once, each at most a few times (its retries while the database was away).
    assert len(reran) <= SUPERVISORS * PROCS * CONCURRENCY, reran
    assert runs_beyond_attempts(url) == []
    for log in logs:
        assert log.count("event=worker.spawned") == PROCS, log  # no worker was replaced
        assert "event=worker.crashed" not in log and "event=supervisor.giving_up" not in log
        assert "Traceback" not in log, log
    assert drained < DRAIN_BOUND, f"the backlog drained {drained:.1f} s after the failover"
    # Every worker's LISTEN connection went down with the old primary and listens on the new one.
    assert counts["listen.lost"] == SUPERVISORS * PROCS == counts["listen.reconnected"], counts
    # No lease ran out (none is 30 s old): no worker should believe it lost one.
    lost = [line for log in logs for line in log.splitlines() if re.search(r"event=lease\.lost", line)]
    assert lost == [], "\n".join(lost + [explain(url, line.rsplit("execution=", 1)[1]) for line in lost])


EXPLAIN = {
    "status": "SELECT status FROM zart_execution_runs WHERE id = %s",
    "steps": "SELECT step_key, status FROM zart_steps WHERE execution_id = %s ORDER BY seq",
    "attempts": "SELECT step_key, attempt, outcome, error_type, worker_id FROM zart_step_attempts"
    " WHERE execution_id = %s ORDER BY started_at",
    "effects": "SELECT step_key, pid FROM test_effects WHERE execution_id = %s ORDER BY id",
    "task": "SELECT claimed_by, claims FROM zart_tasks WHERE execution_id = %s",
}


def explain(url: str, execution: str) -> str:
    """An execution's status, steps, attempts, effects and task: the evidence of a `lease.lost` line."""
    return f"{execution}: " + "; ".join(
        f"{name} {query(url, statement, (execution,))}" for name, statement in EXPLAIN.items()
    )
