"""Several machines on one database: claim queries per notification, and throughput, with S supervisors.

    python -m bench.herd --supervisors 1 4 --procs 2

Each supervisor (`zart supervise --name sK`) stands in for a machine. Two measures, for each number of
supervisors, in one run:

- **Claim queries per notification.** One-step workflows are started one at a time, `--gap` apart, so
  that each start's NOTIFY finds every worker idle: how many claim queries the workers ran in all
  (their `worker.stopped` log lines count them), per start. With one notification making every
  machine's workers look, this grows with the machines; it should not. The workers poll rarely here
  (`--poll-interval 60s`), so that the count is the notifications'.
- **Throughput.** `--workflows` workflows of `--steps` steps started at once (one `start_many`): their
  completions per second, from the first start to the last end, as recorded in the database.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

import zart
from zart.pools import close_pools

from .harness import REPO_ROOT, table
from .throughput import FreshDatabase, server_url

_CLAIMS = re.compile(r"event=worker\.stopped .*claims=(\d+)")


class Supervisor:
    """A `zart supervise --name NAME` whose log goes to a file (its workers' counts are read from it)."""

    def __init__(self, url: str, name: str, procs: int, extra: list[str]) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"zart-herd-{name}-", suffix=".log")[1])
        env = dict(os.environ, ZART_DATABASE_URL=url, PYTHONPATH=str(REPO_ROOT))
        command = [sys.executable, "-m", "zart", "supervise", "--app", "bench.apps"]
        if _has_names():  # an engine from before `--name` (bench.versus --before) runs unnamed
            command += ["--name", name]
        command += ["--procs", str(procs), *extra]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stderr=out, stdout=out)
        self.procs = procs
        self.claims: int | None = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_text().count("event=worker.started") < self.procs:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"supervisor not ready:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, wait, and the claim queries its workers ran (once; then the same count)."""
        if self.claims is not None:
            return self.claims
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        text = self.log.read_text()
        self.log.unlink()
        self.claims = sum(int(found) for found in _CLAIMS.findall(text))
        return self.claims


def _has_names() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "zart", "supervise", "--help"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    return "--name" in done.stdout


def _fleet(stack: ExitStack, url: str, supervisors: int, procs: int, extra: list[str]) -> list[Supervisor]:
    fleet = [Supervisor(url, f"s{k}", procs, extra) for k in range(supervisors)]
    for supervisor in fleet:
        stack.callback(supervisor.stop)
    for supervisor in fleet:
        supervisor.wait_ready()
    return fleet


def _wait_done(url: str, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while (
            conn.execute("SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'").fetchone()[0]
            < count
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all of {count} executions completed in {timeout} s")
            time.sleep(0.02)


def claims_per_notification(supervisors: int, procs: int, starts: int, gap: float) -> dict[str, Any]:
    with FreshDatabase(server_url()) as db, ExitStack() as stack:
        fleet = _fleet(stack, db.url, supervisors, procs, ["--poll-interval", "60s"])
        for i in range(starts):
            zart.start("bench-steps", 1, id=f"herd-{i}", database_url=db.url).result(timeout=30)
            time.sleep(gap)  # a pace, not a wait: each start finds the workers idle
        _wait_done(db.url, starts)
        close_pools(db.url)
        claims = sum(supervisor.stop() for supervisor in fleet)
    return {
        "supervisors": supervisors,
        "procs": procs,
        "notifications": starts,
        "claim_queries": claims,
        "per_notification": round(claims / starts, 2),
    }


def throughput(supervisors: int, procs: int, workflows: int, steps: int) -> dict[str, Any]:
    with FreshDatabase(server_url()) as db, ExitStack() as stack:
        _fleet(stack, db.url, supervisors, procs, [])
        zart.start_many("bench-steps", [steps] * workflows, database_url=db.url)
        _wait_done(db.url, workflows)
        with psycopg.connect(db.url, autocommit=True) as conn:
            (seconds,) = conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8"
                " FROM zart_execution_runs"
            ).fetchone()
        close_pools(db.url)
    return {
        "supervisors": supervisors,
        "procs": procs,
        "workflows": workflows,
        "seconds": round(seconds, 2),
        "workflows_per_s": round(workflows / seconds),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supervisors", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--workflows", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args(argv)
    claims = [
        claims_per_notification(s, options.procs, options.starts, options.gap)
        for _ in range(options.rounds)
        for s in options.supervisors
    ]
    print(table(claims, ["supervisors", "procs", "notifications", "claim_queries", "per_notification"]))
    rates = [
        throughput(s, options.procs, options.workflows, options.steps)
        for _ in range(options.rounds)
        for s in options.supervisors
    ]
    print(table(rates, ["supervisors", "procs", "workflows", "seconds", "workflows_per_s"]))


if __name__ == "__main__":
    main()
