"""Load test of the HTTP API with locust, on a fresh database, in one command.

    python -m bench.load --users 50 --spawn-rate 10 --time 60s

Creates a fresh database, starts `zart supervise --app bench.workflows` and `zart serve --app
bench.workflows` behind it, runs `locust -f bench/locustfile.py --headless` against the server for
the given time, and prints one JSON line: requests/s, p50/p95/p99 latencies, failures, per endpoint,
and how the orders ended. Locust's CSV files, its output and the servers' logs go to bench/results/
(`locust-NAME*`: locust's final statistics in `locust-NAME-stats.json`), and the summary to
bench/results/locust-NAME.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psycopg

from tests.helpers import stop_process, wait_until

from .throughput import FreshDatabase, server_url

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results"
LISTENING = re.compile(r"event=http\.listening url=(http://\S+)")


def _zart(*args: str) -> list[str]:
    return [sys.executable, "-m", "zart", *args]


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout, interval=0.05, what=what)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def percentile(response_times: dict[int, int], count: int, fraction: float) -> float:
    """Locust's own percentile of its response-time histogram (ms, rounded as locust rounds)."""
    wanted = int(count * fraction)
    seen = 0
    for response_time in sorted(response_times, reverse=True):
        seen += response_times[response_time]
        if count - seen <= wanted:
            return float(response_time)
    return 0.0


def _figures(entries: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(entry["num_requests"] for entry in entries)
    times: dict[int, int] = {}
    for entry in entries:
        for key, value in entry["response_times"].items():
            times[int(float(key))] = times.get(int(float(key)), 0) + value
    began = min(entry["start_time"] for entry in entries)
    ended = max(entry["last_request_timestamp"] or began for entry in entries)
    return {
        "requests": requests,
        "failures": sum(entry["num_failures"] for entry in entries),
        "requests_per_s": round(requests / max(ended - began, 1e-9), 1),
        "p50_ms": percentile(times, requests, 0.50),
        "p95_ms": percentile(times, requests, 0.95),
        "p99_ms": percentile(times, requests, 0.99),
        "max_ms": round(max(entry["max_response_time"] for entry in entries), 1),
    }


def read_stats(path: Path) -> dict[str, Any]:
    """Locust's final statistics (`--json-file`): the totals and each endpoint's."""
    entries = orjson.loads(path.read_bytes())
    if not entries:
        return {"requests": 0, "failures": 0, "endpoints": {}}
    endpoints = {f"{entry['method']} {entry['name']}": _figures([entry]) for entry in entries}
    return {**_figures(entries), "endpoints": endpoints}


def read_failures(path: Path) -> list[dict[str, str]]:
    """Locust's failures CSV (written every few seconds: it may miss the very last ones)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def run(
    users: int = 50,
    spawn_rate: float = 10,
    duration: str = "60s",
    procs: int = 1,
    server_workers: int = 1,
    name: str = "run",
) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = RESULTS / f"locust-{name}"
    with FreshDatabase(server_url()) as database:
        env = dict(os.environ, ZART_DATABASE_URL=database.url)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("ZART_API_TOKEN", None)
        with (
            open(f"{prefix}-supervise.log", "w") as supervise_log,
            open(f"{prefix}-serve.log", "w") as serve_log,
        ):
            supervisor = subprocess.Popen(
                _zart("supervise", "--app", "bench.workflows", "--procs", str(procs), "--lease", "10s"),
                env=env,
                cwd=REPO_ROOT,
                stdout=supervise_log,
                stderr=subprocess.STDOUT,
            )
            server = subprocess.Popen(
                _zart("serve", "--app", "bench.workflows", "--port", "0", "--workers", str(server_workers)),
                env=env,
                cwd=REPO_ROOT,
                stdout=serve_log,
                stderr=subprocess.STDOUT,
            )
            try:
                with psycopg.connect(database.url, autocommit=True) as conn:
                    _wait(
                        lambda: (
                            supervisor.poll() is not None
                            or conn.execute("SELECT count(*) FROM zart_workers").fetchone()[0] >= procs
                        ),
                        60,
                        "the workers to start",
                    )
                if supervisor.poll() is not None:
                    raise RuntimeError(f"zart supervise exited:\n{Path(supervise_log.name).read_text()}")
                found = _wait(
                    lambda: server.poll() is not None or LISTENING.search(Path(serve_log.name).read_text()),
                    60,
                    "zart serve to listen",
                )
                if server.poll() is not None:
                    raise RuntimeError(f"zart serve exited:\n{Path(serve_log.name).read_text()}")
                url = found.group(1)
                _wait(lambda: _healthy(url), 60, "/healthz to answer")
                began = time.monotonic()
                locust = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "locust",
                        "-f",
                        str(REPO_ROOT / "bench" / "locustfile.py"),
                        "--headless",
                        "-u",
                        str(users),
                        "-r",
                        str(spawn_rate),
                        "-t",
                        duration,
                        "--host",
                        url,
                        "--csv",
                        str(prefix),
                        "--json-file",
                        f"{prefix}-stats",  # locust adds .json
                        "--only-summary",
                        "--stop-timeout",
                        "5",
                    ],
                    env=env,
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=_seconds(duration) + 120,
                )
                elapsed = time.monotonic() - began
                Path(f"{prefix}.log").write_text(locust.stdout + locust.stderr)
                with psycopg.connect(database.url, autocommit=True) as conn:
                    orders = dict(
                        conn.execute(
                            "SELECT status, count(*) FROM zart_execution_runs GROUP BY status"
                        ).fetchall()
                    )
            finally:
                stop_process(server)
                stop_process(supervisor)
    stats_path = Path(f"{prefix}-stats.json")
    if not stats_path.exists():
        raise RuntimeError(f"locust wrote no statistics (exit {locust.returncode}):\n{locust.stderr[-3000:]}")
    summary = {
        "users": users,
        "spawn_rate": spawn_rate,
        "duration": duration,
        "seconds": round(elapsed, 1),
        "worker_procs": procs,
        "server_workers": server_workers,
        "cpus": os.cpu_count(),
        "locust_exit_code": locust.returncode,
        **read_stats(stats_path),
        "failure_details": read_failures(Path(f"{prefix}_failures.csv")),
        "orders_by_status": orders,
    }
    Path(f"{prefix}.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def _seconds(duration: str) -> float:
    """Locust's `-t` (`10s`, `2m`, `1h30m`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)\s*([hms])", duration)
    if not parts:
        return float(duration)
    return float(sum(int(number) * units[unit] for number, unit in parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-u", "--users", type=int, default=50)
    parser.add_argument("-r", "--spawn-rate", type=float, default=10)
    parser.add_argument("-t", "--time", dest="duration", default="60s")
    parser.add_argument("--procs", type=int, default=1, help="worker processes of zart supervise")
    parser.add_argument("--server-workers", type=int, default=1, help="processes of zart serve")
    parser.add_argument("--name", default="run", help="results go to bench/results/locust-NAME*")
    args = parser.parse_args(argv)
    summary = run(args.users, args.spawn_rate, args.duration, args.procs, args.server_workers, args.name)
    print(orjson.dumps(summary).decode())
    return 0 if summary["failures"] == 0 and summary["locust_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
