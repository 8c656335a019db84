"""The soak (issue 19): thousands of workflows under two `zart supervise`, on a primary with a
synchronous standby, while a chaos driver SIGKILLs a random worker every 1-3 s, SIGSTOPs one past its
lease and resumes it, restarts PostgreSQL once and, separately, fails over once.

    python -m bench.soak --workflows 10000

The workflows (tests/apps/soak_app.py) use steps, a retry, sleeps, an event the driver sends,
zart.parallel, zart.map over steps and over child workflows, and child workflows. Once the chaos
ends and the backlog drains, the soak counts: lost executions (started, absent or never finished),
stuck ones (still in progress), wrong results, steps checkpointed twice (more than one succeeded
attempt) and the steps whose body ran more than once (the effects table), which only the steps in
flight at a disruption may do. `check()` lists what breaks those rules; tests/test_soak.py runs it.

Everything is real: PostgreSQL processes (tests/pgcluster.py), forked workers, signals.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

import zart
from tests.apps import soak_app
from tests.helpers import (
    EFFECTS_TABLE_SQL,
    SupervisorProcess,
    child_pids,
    query,
    scalar,
    wait_until,
    worker_env,
)
from tests.pgcluster import ReplicatedCluster
from zart.pools import close_pools

APP = "tests.apps.soak_app"
IN_PROGRESS = ("pending", "running", "sleeping", "waiting")
LOG_EVENTS = (
    "lease.lost",
    "worker.spawned",
    "worker.released",
    "worker.crashed",
    "worker.unresponsive",
    "supervisor.giving_up",
    "database.lost",
    "claim.failing",
    "listen.lost",
    "execution.interrupted",
    "execution.failed_alone",
)


def _retrying(action: Callable[[], Any], url: str, what: str, timeout: float = 60) -> Any:
    """Run a client call through the database's restart or failover: retry it on a database error
    (the calls used here are idempotent: starts by id, events by key)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (psycopg.Error, zart.DatabaseUnavailable) as error:
            close_pools(url)  # its connections may be to a server that is gone
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s: {error}") from error
            time.sleep(0.2)


def _safe_scalar(url: str, statement: str, params: Any = None) -> Any:
    try:
        return scalar(url, statement, params)
    except psycopg.Error:
        return None


def _safe_query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    try:
        return query(url, statement, params)
    except psycopg.Error:
        return []


class Chaos:
    """The driver: starts the workflows, sends their events and disrupts everything on a schedule."""

    def __init__(
        self,
        cluster: ReplicatedCluster,
        url: str,
        supervisors: list[SupervisorProcess],
        workflows: int,
        lease: float,
        chaos_seconds: float,
        rng: random.Random,
        log: Callable[[str], None],
    ) -> None:
        self.cluster = cluster
        self.url = url
        self.supervisors = supervisors
        self.workflows = workflows
        self.lease = lease
        self.seconds = chaos_seconds
        self.rng = rng
        self.log = log
        self.kills: list[int] = []
        self.stopped_pid: int | None = None  # while it is stopped
        self.sigstopped: int | None = None  # the worker that was
        self.resumed = threading.Event()
        self.open_transactions_at_resume: int | None = None
        self.stopped_for = 0.0
        self.restart: dict[str, float] = {}
        self.failover: dict[str, float] = {}
        self.started = 0
        self.events_pending = {n for n in range(workflows) if soak_app.needs_event(n)}
        self.events_sent = 0

    def workers(self) -> list[int]:
        return [pid for supervisor in self.supervisors for pid in child_pids(supervisor.process.pid)]

    def start_chunk(self, count: int) -> None:
        numbers = list(range(self.started, min(self.workflows, self.started + count)))
        if not numbers:
            return
        _retrying(
            lambda: zart.start_many(
                soak_app.soak, numbers, [f"soak-{n}" for n in numbers], database_url=self.url
            ),
            self.url,
            "starting workflows",
        )
        self.started = numbers[-1] + 1

    def send_events(self) -> None:
        """Send `go` to every execution that needs it and has begun (before or after it reached
        its wait: an early event is kept). Errors while the database is away: next time."""
        if not self.events_pending:
            return
        ids = [f"soak-{n}" for n in sorted(self.events_pending)]
        try:
            begun = {
                row[0]
                for row in query(
                    self.url,
                    "SELECT id FROM zart_execution_runs WHERE id = ANY(%s) AND status <> 'pending'",
                    (ids,),
                )
            }
        except psycopg.Error:
            return
        for execution in sorted(begun):
            n = int(execution.removeprefix("soak-"))
            try:
                zart.send_event(execution, "go", {"add": n}, key="go", database_url=self.url)
            except (psycopg.Error, zart.DatabaseUnavailable):
                close_pools(self.url)
                return
            self.events_pending.discard(n)
            self.events_sent += 1

    def kill_one(self) -> None:
        """SIGKILL a random worker among those holding executions now (any, if none does): a kill
        of an idle worker tests only its replacement, one mid-step cuts an attempt short."""
        pids = [pid for pid in self.workers() if pid != self.stopped_pid]
        holding = [pid for pid in self._holding() if pid in pids]
        if pids:
            pid = self.rng.choice(holding or pids)
            os.kill(pid, signal.SIGKILL)
            self.kills.append(pid)

    def _holding(self) -> list[int]:
        """The workers holding executions now, those with the most first."""
        rows = _safe_query(
            self.url,
            "SELECT w.pid FROM zart_workers w JOIN zart_tasks t ON t.claimed_by = w.id"
            " WHERE t.run_at > now() GROUP BY w.pid ORDER BY count(*) DESC",
        )
        return [pid for (pid,) in rows]

    def sigstop(self, began: float) -> None:
        """SIGSTOP a worker; a timer thread sends SIGCONT once it is well past its lease.

        Not the driver's loop: a worker stopped inside a transaction holds its tasks' row locks, and
        the driver's own calls (an event to one of those executions) wait for them until it resumes.
        """
        # A worker that holds executions now, so that stopping it past its lease costs it those
        # (else the driver tries again at its next round).
        candidates = [pid for pid in self._holding() if pid in self.workers()]
        if not candidates:
            return
        pid = self.stopped_pid = self.sigstopped = candidates[0]
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        self.log(f"  {stopped_at - began:5.1f} s  SIGSTOP worker {pid}")

        def resume() -> None:
            # Evidence for the report: transactions the stopped worker left open (their row locks
            # keep the other workers, which claim with SKIP LOCKED, off those tasks past the lease).
            self.open_transactions_at_resume = _safe_scalar(
                self.url,
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
                " AND xact_start < now() - make_interval(secs => %s)",
                (self.lease,),
            )
            os.kill(pid, signal.SIGCONT)
            self.stopped_pid = None
            self.stopped_for = time.monotonic() - stopped_at
            self.log(
                f"  {time.monotonic() - began:5.1f} s  SIGCONT worker {pid} after {self.stopped_for:.1f} s"
            )
            self.resumed.set()

        timer = threading.Timer(self.lease + 1.5, resume)  # well past its lease: others take over
        timer.daemon = True
        timer.start()

    def run(self) -> None:
        began = time.monotonic()
        chunks = 20
        start_every = 0.6 * self.seconds / chunks
        chunk = -(-self.workflows // chunks)
        next_start = began
        stop_at = began + 0.1 * self.seconds
        restart_at = began + 0.45 * self.seconds
        failover_at = began + 0.75 * self.seconds
        next_kill = began + self.rng.uniform(1, 3)
        next_events = began
        while True:
            now = time.monotonic()
            if self.started < self.workflows and now >= next_start:
                self.start_chunk(chunk)
                next_start += start_every
            if self.sigstopped is None and now >= stop_at:
                self.sigstop(began)
            if not self.restart and now >= restart_at and self.resumed.is_set():
                self.restart = {"down": self.cluster.restart_primary()}
                self.restart["resynced"] = self.cluster.timings["resynced"][-1]
                self.log(f"  {now - began:5.1f} s  restarted PostgreSQL: {self.restart}")
            if not self.failover and self.restart and now >= failover_at:
                self.failover = self.cluster.failover()
                self.log(f"  {now - began:5.1f} s  failed over: {self.failover}")
            if now >= next_kill:
                self.kill_one()
                next_kill = now + self.rng.uniform(1, 3)
            if now >= next_events:
                self.send_events()
                next_events = now + 0.5
            done = self.started >= self.workflows and self.restart and self.failover and self.resumed.is_set()
            if done and now - began >= self.seconds:
                break
            time.sleep(0.05)  # the driver's cadence, not a wait for a condition
        self.log(f"  {time.monotonic() - began:5.1f} s  chaos over: {len(self.kills)} SIGKILLs")


def _expected_executions(workflows: int) -> int:
    return workflows + sum(soak_app.children(n) for n in range(workflows))


def _finished(url: str) -> int | None:
    return _safe_scalar(
        url, "SELECT count(*) FROM zart_execution_runs WHERE status <> ALL(%s)", (list(IN_PROGRESS),)
    )


def collect(url: str, workflows: int) -> dict[str, Any]:
    """The counts the rules are checked on."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # fresh tables: without statistics the anti-joins below take minutes
    statuses = dict(query(url, "SELECT status, count(*) FROM zart_execution_runs GROUP BY 1"))
    results = query(url, "SELECT id, result FROM zart_execution_runs WHERE workflow = 'soak'")
    wrong = [
        execution
        for execution, result in results
        if result != soak_app.expected(int(execution.removeprefix("soak-")))
    ]
    reran = query(
        url,
        "SELECT execution_id, step_key, count(*) FROM test_effects GROUP BY 1, 2 HAVING count(*) > 1",
    )
    return {
        "workflows": workflows,
        "executions_expected": _expected_executions(workflows),
        "executions": sum(statuses.values()),
        "statuses": statuses,
        "parents_missing": workflows - len(results),
        "wrong_results": len(wrong),
        "wrong_result_ids": wrong[:10],
        "steps": scalar(url, "SELECT count(*) FROM zart_steps WHERE kind = 'step'"),
        "steps_checkpointed_twice": scalar(
            url,
            "SELECT count(*) FROM (SELECT execution_id, step_key FROM zart_step_attempts"
            " WHERE outcome = 'succeeded' GROUP BY 1, 2 HAVING count(*) > 1) d",
        ),
        "steps_without_effect": scalar(
            url,
            "SELECT count(*) FROM zart_steps s WHERE s.kind = 'step' AND s.status = 'completed'"
            " AND NOT EXISTS (SELECT 1 FROM test_effects e"
            " WHERE e.execution_id = s.execution_id AND e.step_key = s.step_key)",
        ),
        "effects": scalar(url, "SELECT count(*) FROM test_effects"),
        "steps_rerun": len(reran),
        "extra_runs": sum(count - 1 for _, _, count in reran),
        # A body run that no attempt on record accounts for would be a step run after its checkpoint.
        "runs_beyond_attempts": scalar(
            url,
            """SELECT count(*) FROM (SELECT execution_id, step_key, count(*) AS runs FROM test_effects
                                     GROUP BY 1, 2) e
               WHERE e.runs > (SELECT count(*) FROM zart_step_attempts a
                               WHERE a.execution_id = e.execution_id AND a.step_key = e.step_key)""",
        ),
        "attempts": dict(
            query(url, "SELECT coalesce(outcome, 'open'), count(*) FROM zart_step_attempts GROUP BY 1")
        ),
        "tasks_left": scalar(url, "SELECT count(*) FROM zart_tasks"),
    }


def run_soak(
    workflows: int = 10_000,
    *,
    supervisors: int = 2,
    procs: int = 2,
    concurrency: int = 20,
    lease: float = 4.0,
    chaos_seconds: float | None = None,
    drain_timeout: float | None = None,
    seed: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the soak; its summary (durations, counts, log events). Raises only if it cannot run."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    chaos_seconds = chaos_seconds if chaos_seconds is not None else max(20.0, workflows / 150)
    drain_timeout = drain_timeout if drain_timeout is not None else 60.0 + workflows / 50
    began = time.monotonic()
    with ReplicatedCluster() as cluster:
        url = cluster.create_database("soak")
        zart.migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(EFFECTS_TABLE_SQL)
            # The final counts join it with the steps: tens of thousands of rows each at 10,000.
            conn.execute("CREATE INDEX ON test_effects (execution_id, step_key)")
        log(f"soak: {workflows} workflows, seed {seed}, cluster built in {cluster.timings['build']:.1f} s")
        extra = ("--procs", str(procs), "--concurrency", str(concurrency), "--lease", f"{lease:g}s")
        processes = [
            SupervisorProcess(worker_env(url), *extra, "--poll-interval", "1s", app=APP)
            for _ in range(supervisors)
        ]
        chaos = Chaos(cluster, url, processes, workflows, lease, chaos_seconds, rng, log)
        drained = None
        try:
            for process in processes:
                process.wait_workers(procs)
            ready = time.monotonic()
            chaos.run()
            chaos_over = time.monotonic()
            expected = _expected_executions(workflows)
            deadline = chaos_over + drain_timeout
            while time.monotonic() < deadline:
                chaos.send_events()
                if _finished(url) == expected:
                    drained = time.monotonic()
                    break
                time.sleep(0.1)  # polling the backlog, bounded by the deadline above
            for process in processes:  # the last SIGKILLed worker's replacement
                wait_until(
                    lambda p=process: len(child_pids(p.process.pid)) == procs,
                    timeout=30,
                    what="every worker replaced",
                )
            supervisor_pids_alive = all(process.process.poll() is None for process in processes)
        finally:
            if chaos.stopped_pid is not None:  # a failure during the SIGSTOP: let it stop
                os.kill(chaos.stopped_pid, signal.SIGCONT)
            codes = [process.stop() for process in processes]
            close_pools(url)
        logs = [process.log() for process in processes]
        summary = collect(url, workflows)
    ended = time.monotonic()
    events = {event: sum(text.count(f"event={event} ") for text in logs) for event in LOG_EVENTS}
    stopped_lease_lost = sum(
        1
        for text in logs
        for line in text.splitlines()
        if "event=lease.lost" in line and f":{chaos.sigstopped}:" in line
    )
    summary.update(
        seed=seed,
        lease=lease,
        capacity=supervisors * procs * concurrency,
        initial_workers=supervisors * procs,
        kills=len(chaos.kills),
        sigkilled_seen=sum(text.count("status='killed by SIGKILL'") for text in logs),
        sigstop_seconds=round(chaos.stopped_for, 2),
        open_transactions_at_resume=chaos.open_transactions_at_resume,
        restart=chaos.restart,
        failover=chaos.failover,
        events_sent=chaos.events_sent,
        events_expected=sum(soak_app.needs_event(n) for n in range(workflows)),
        log_events=events,
        lease_lost_by_the_stopped_worker=stopped_lease_lost,
        lease_lost_elsewhere=events["lease.lost"] - stopped_lease_lost,
        # Claim queries the workers ran (the last ones only: a SIGKILLed worker logs none).
        claims=sum(
            int(n) for text in logs for n in re.findall(r"event=worker\.stopped .* claims=(\d+)", text)
        ),
        tracebacks=sum(text.count("Traceback") for text in logs),
        supervisor_exit_codes=codes,
        supervisors_alive_at_the_end=supervisor_pids_alive,
        drained=drained is not None,
        seconds={
            "total": round(ended - began, 1),
            "chaos": round(chaos_over - ready, 1),
            "drain_after_chaos": None if drained is None else round(drained - chaos_over, 1),
            "workflows_done": None if drained is None else round(drained - ready, 1),
        },
    )
    return summary


def check(summary: dict[str, Any]) -> list[str]:
    """The soak's rules; what breaks them (empty: all kept)."""
    problems = []
    statuses = summary["statuses"]
    in_progress = sum(statuses.get(status, 0) for status in IN_PROGRESS)
    lost = summary["parents_missing"] + (summary["executions_expected"] - summary["executions"])
    if lost:
        problems.append(f"{lost} execution(s) lost")
    if in_progress or not summary["drained"]:
        problems.append(f"{in_progress} execution(s) stuck in progress: {statuses}")
    if statuses.get("completed", 0) != summary["executions_expected"]:
        problems.append(f"not all {summary['executions_expected']} executions completed: {statuses}")
    if summary["wrong_results"]:
        problems.append(f"{summary['wrong_results']} wrong result(s): {summary['wrong_result_ids']}")
    if summary["steps_checkpointed_twice"]:
        problems.append(f"{summary['steps_checkpointed_twice']} step(s) with two succeeded attempts")
    if summary["steps_without_effect"]:
        problems.append(f"{summary['steps_without_effect']} checkpointed step(s) whose body never ran")
    if summary["tasks_left"]:
        problems.append(f"{summary['tasks_left']} task(s) left")
    # Only steps in flight at a disruption run again: at most what the workers can hold at once,
    # per disruption (each SIGKILL, the SIGSTOP, the restart, the failover).
    bound = summary["capacity"] * (summary["kills"] + 3)
    if summary["steps_rerun"] > bound:
        problems.append(f"{summary['steps_rerun']} steps ran more than once, over the bound {bound}")
    # ... and each extra run of a step's body has an attempt of its own on record (one cut short by
    # a disruption): never a run after the step's checkpoint.
    if summary["runs_beyond_attempts"]:
        problems.append(f"{summary['runs_beyond_attempts']} step(s) ran more often than their attempts")
    if summary["sigkilled_seen"] != summary["kills"]:
        problems.append(
            f"{summary['kills']} SIGKILLs sent, {summary['sigkilled_seen']} seen by the supervisors"
        )
    spawned = summary["log_events"]["worker.spawned"]
    if spawned != summary["initial_workers"] + summary["kills"]:
        problems.append(f"{spawned} workers spawned for {summary['kills']} SIGKILLs")
    # worker.unresponsive: the watchdog (its default limit, a minute) took a worker waiting out the
    # restart, the failover or its SIGSTOP for a hung one.
    for event in ("worker.crashed", "worker.unresponsive", "supervisor.giving_up", "execution.failed_alone"):
        if summary["log_events"][event]:
            problems.append(f"{summary['log_events'][event]} {event} in the logs")
    if summary["tracebacks"]:
        problems.append(f"{summary['tracebacks']} traceback(s) in the logs")
    if not summary["supervisors_alive_at_the_end"] or summary["supervisor_exit_codes"] != [0] * len(
        summary["supervisor_exit_codes"]
    ):
        problems.append(
            f"supervisors: alive {summary['supervisors_alive_at_the_end']},"
            f" exit codes {summary['supervisor_exit_codes']}"
        )
    if summary["events_sent"] != summary["events_expected"]:
        problems.append(f"{summary['events_sent']} of {summary['events_expected']} events sent")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=2, help="worker processes per supervisor")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--lease", type=float, default=4.0, help="seconds")
    parser.add_argument("--chaos-seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    summary = run_soak(
        args.workflows,
        procs=args.procs,
        concurrency=args.concurrency,
        lease=args.lease,
        chaos_seconds=args.chaos_seconds,
        seed=args.seed,
    )
    for key, value in summary.items():
        print(f"{key}: {value}")
    problems = check(summary)
    print(
        "OK: 0 lost, 0 stuck, 0 duplicate checkpoints"
        if not problems
        else "FAILED:\n  " + "\n  ".join(problems)
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
