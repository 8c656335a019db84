"""What the start and queue benchmarks share: a real `zart supervise`, the checkout's commit, tables.

The benchmarks run the same script against two checkouts of Zart (see bench/versus.py), so this
module uses nothing that only one engine version has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_STARTED = "event=worker.started"


def checkout() -> str:
    """The engine's version: the last commit that changed zart/ or migrations/ in this checkout (not
    HEAD, which may only add benchmarks), so that a before/after table says which is which."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", "zart", "migrations"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


@contextmanager
def supervise(
    url: str,
    procs: int,
    app: str = "bench.apps",
    concurrency: int = 500,
    batch: int = 200,
    extra: Sequence[str] = (),
) -> Iterator[subprocess.Popen[str]]:
    """A real `zart supervise --procs P` on `url`, yielded once every worker is claiming.

    Waiting for the workers first keeps their start-up (imports, pools, registration) out of the
    timings, which are then taken from the database's own timestamps. The supervisor's stderr is
    drained for the whole run: a full pipe would block the workers that log into it.
    """
    env = dict(os.environ, ZART_DATABASE_URL=url, PYTHONPATH=str(REPO_ROOT))
    command = [
        sys.executable,
        "-m",
        "zart",
        "supervise",
        "--app",
        app,
        "--procs",
        str(procs),
        "--concurrency",
        str(concurrency),
        "--batch",
        str(batch),
        *extra,
    ]
    with ready_process(command, env, WORKER_STARTED, procs, "the supervisor") as process:
        yield process


@contextmanager
def ready_process(
    command: Sequence[str], env: dict[str, str], marker: str, count: int, what: str, **popen: Any
) -> Iterator[subprocess.Popen[str]]:
    """`command` started, yielded once `count` lines of its stderr hold `marker` (its processes are
    ready); its stderr is drained for the whole run (a full pipe would block whoever logs into it),
    and it is terminated (killed after a minute) at the end."""
    process = subprocess.Popen(
        list(command), env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, errors="replace", **popen
    )
    assert process.stderr is not None
    try:
        started = 0
        while started < count:
            line = process.stderr.readline()
            if not line:
                raise RuntimeError(f"{what} exited before its processes were ready")
            started += marker in line
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield process
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used: user + system) of a live process, from /proc (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def process_tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of `root` and of all its descendants that are alive now."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], cpu[int(entry.name)] = stat
    members = {root}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in members} - members
        members |= found
        grew = bool(found)
    return {pid: cpu[pid] for pid in members if pid in cpu}


class CpuMeter:
    """CPU seconds the workers (the supervisor's process tree) and their database sessions (the
    backends of the benchmark's database, less the meter's own) used between start() and stop().

    Wall-clock throughput on a machine shared with other work swings by +-50%; CPU time per
    workflow barely moves with the other load, so it is what a before/after comparison can trust.
    Both processes must be alive at stop(): sessions that ended before (a client's, closed) are
    left out. Linux only: elsewhere every figure is None.
    """

    def __init__(self, conn: psycopg.Connection, supervisor_pid: int) -> None:
        self._conn = conn
        self._root = supervisor_pid
        self._start: tuple[dict[int, float], dict[int, float]] | None = None

    def _backends(self) -> dict[int, float]:
        pids = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return {pid: stat[1] for (pid,) in pids if (stat := _stat(pid)) is not None}

    def start(self) -> None:
        if Path("/proc/self/stat").exists():
            self._start = (process_tree_cpu(self._root), self._backends())

    def stop(self) -> tuple[float | None, float | None]:
        """(workers' CPU seconds, database sessions' CPU seconds) since start()."""
        if self._start is None:
            return None, None
        workers, backends = process_tree_cpu(self._root), self._backends()
        return (
            sum(cpu - self._start[0].get(pid, 0.0) for pid, cpu in workers.items()),
            sum(cpu - self._start[1].get(pid, 0.0) for pid, cpu in backends.items()),
        )


def per_workflow(cpu_seconds: float | None, workflows: int) -> float | None:
    """CPU milliseconds per workflow, or None when the meter could not measure."""
    return None if cpu_seconds is None else round(1000 * cpu_seconds / workflows, 3)


def wait_for_completed(url: str, workflows: int, supervisor: subprocess.Popen[str], timeout: float) -> None:
    """Until `workflows` executions are completed; finished executions leave no task, so the poll
    reads the small table and counts the big one once."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute("SELECT NOT EXISTS (SELECT 1 FROM zart_tasks)").fetchone()[0]:
            if supervisor.poll() is not None:
                raise RuntimeError("the supervisor exited early")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not done after {timeout} s")
            time.sleep(0.02)
        completed = conn.execute(
            "SELECT count(*) FROM zart_execution_runs WHERE status = 'completed'"
        ).fetchone()[0]
    if completed != workflows:
        raise RuntimeError(f"{completed} of {workflows} executions completed")


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat does not exist."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(busy_below: float = 0.15, patience: float = 300.0) -> float:
    """Wait until the machine's CPUs are idle (less than `busy_below` of them busy over a second),
    at most `patience` seconds; returns the busy fraction last seen.

    On a small machine shared with other work (a test suite, another benchmark), a run that starts
    while something else is busy measures the other thing too. This does not stop it from starting
    during the run; alternating versions and taking medians is what absorbs that.
    """
    deadline = time.monotonic() + patience
    while True:
        before = _cpu_times()
        time.sleep(1.0)
        after = _cpu_times()
        if before is None or after is None:
            return 0.0
        busy = (after[0] - before[0]) / max(1, after[1] - before[1])
        if busy < busy_below:
            return busy
        if time.monotonic() > deadline:
            print(f"bench: still {busy:.0%} busy after {patience:.0f} s, running anyway", file=sys.stderr)
            return busy


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of `columns` (right-aligned numbers), for a person reading the output."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    numeric = [all(isinstance(row.get(column), (int, float)) for row in rows) for column in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * width for width in widths]), *(line(c) for c in cells)])


def time_workflows(
    url: str,
    workflow: Any,
    inputs: list[Any],
    procs: int,
    *,
    executions: int | None = None,
    extra: Sequence[str] = (),
) -> tuple[float, float | None]:
    """Start `inputs` of `workflow` in one `zart.start_many` under `zart supervise --procs P`
    (already claiming) and wait for all (`executions` in all, children included); the seconds from
    the first execution's creation to the last one's finish (the database's timestamps), and the
    workers' CPU seconds (None where it cannot be read)."""
    import zart

    with supervise(url, procs, extra=extra) as supervisor, psycopg.connect(url, autocommit=True) as conn:
        meter = CpuMeter(conn, supervisor.pid)
        meter.start()
        zart.start_many(workflow, inputs, database_url=url)
        wait_for_completed(url, executions or len(inputs), supervisor, timeout=600)
        worker_cpu, _ = meter.stop()
        first, last = conn.execute(
            "SELECT min(created_at), max(finished_at) FROM zart_execution_runs"
        ).fetchone()
    return (last - first).total_seconds(), worker_cpu


def steps_row(
    benchmark: str, case: str, workflows: int, steps: int, seconds: float, worker_cpu: float | None
) -> dict[str, Any]:
    """One case of a steps-per-second benchmark, as its JSON line and table row."""
    cpu = None if worker_cpu is None else round(1e6 * worker_cpu / (workflows * steps), 1)
    return {
        "benchmark": benchmark,
        "case": case,
        "engine": checkout(),
        "workflows": workflows,
        "steps": steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(workflows * steps / seconds, 1),
        "worker_cpu_us_per_step": cpu,
    }
