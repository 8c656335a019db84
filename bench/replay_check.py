"""How many recorded histories `zart replay-check` checks per second.

    python -m bench.replay_check --executions 20000 --steps 10

Writes `executions` executions of `bench-steps` with `steps`-step histories straight into a fresh
database (INSERT ... SELECT: no worker), half of them in flight (`running`, the code would run two
more steps) and half `completed`, then checks them all against the code in this process, the way
the command does (`zart.replay_check.replay_check`: the histories loaded a batch per query, replayed
in check mode). Reports histories per second of the whole check, and of the load alone; then runs
the command itself once (`zart replay-check --app bench.apps`), whose time includes Python's start
and the imports. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

import orjson
import psycopg

from zart.history_reads import recorded_executions
from zart.replay_check import Summary, replay_check

from . import apps  # noqa: F401 - registers bench-steps, the code the histories are checked against
from .harness import REPO_ROOT
from .throughput import FreshDatabase, server_url

SINCE = 7 * 86400.0

# Half the executions completed (input: as many steps as recorded), half still running (input: two
# more). Keys and outputs as bench-steps records them: bench-noop#k returned k - 1.
FILL = [
    """
INSERT INTO zart_execution_runs (id, workflow, status, input, result, started_at, finished_at)
SELECT 'check-' || g, 'bench-steps',
       CASE WHEN g %% 2 = 0 THEN 'completed' ELSE 'running' END,
       to_json(CASE WHEN g %% 2 = 0 THEN %(steps)s ELSE %(steps)s + 2 END),
       CASE WHEN g %% 2 = 0 THEN to_json(%(steps)s * (%(steps)s - 1) / 2) END,
       now(), CASE WHEN g %% 2 = 0 THEN now() END
FROM generate_series(1, %(executions)s) g
""",
    """
INSERT INTO zart_steps (execution_id, step_key, seq, kind, status, output, attempts, started_at,
                        finished_at)
SELECT 'check-' || g, 'bench-noop#' || k, k - 1, 'step', 'completed', to_json(k - 1), 1, now(), now()
FROM generate_series(1, %(executions)s) g, generate_series(1, %(steps)s) k
""",
    "ANALYZE zart_execution_runs",
    "ANALYZE zart_steps",
]


def run(executions: int, steps: int, command: bool = True) -> dict[str, Any]:
    with FreshDatabase(server_url()) as database:
        url = database.url
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in FILL:
                conn.execute(statement, {"executions": executions, "steps": steps})

        began = time.perf_counter()
        loaded = sum(len(batch) for batch in recorded_executions(url, since=SINCE))
        load_seconds = time.perf_counter() - began

        summary = Summary()
        for verdict in replay_check(url, since=SINCE):
            summary.add(verdict)
        assert summary.checked == loaded == executions, (summary, loaded)
        assert summary.ok, summary.counts

        command_seconds = None
        if command:
            env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "zart", "replay-check", "--app", "bench.apps", "--database-url", url],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            command_seconds = time.perf_counter() - began
            assert done.returncode == 0, done
    return {
        "benchmark": "replay-check",
        "executions": executions,
        "steps": steps,
        "seconds": round(summary.seconds, 3),
        "histories_per_s": round(executions / summary.seconds),
        "steps_per_s": round(executions * steps / summary.seconds),
        "load_seconds": round(load_seconds, 3),
        "load_histories_per_s": round(executions / load_seconds),
        "command_seconds": None if command_seconds is None else round(command_seconds, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-command", action="store_true", help="skip the run of the command itself")
    args = parser.parse_args(argv)
    print(orjson.dumps(run(args.executions, args.steps, command=not args.no_command)).decode())


if __name__ == "__main__":
    main()
