"""The dashboard's pages on a big database: the server's time per page (issue 18).

    python -m bench.dashboard                                  # 1,000,000 executions
    python -m bench.dashboard --executions 20000 --rounds 5 --json

Fills a fresh database by SQL with N executions of 8 workflows over 30 days (96% completed, 2%
failed, 1% cancelled, 1% waiting; ids are md5 hex, so a prefix search is realistic), one of them with
a 40-entry history, then runs a real `zart serve` with a token, logs in as a browser does, and GETs
each page `--rounds` times after two warm-up requests. Reports, per page, the median and p95 of the
server's own time (the `Server-Timing` header the dashboard sends: from the request reaching the
dashboard to the page rendered, its database reads included) and of the client's round trip.
The acceptance of issue 18: the executions page under 100 ms server-side with 1,000,000 executions.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg

from .harness import REPO_ROOT, table
from .peers import fresh_database
from .throughput import server_url

TOKEN = "bench-dashboard-token"
LISTENING = re.compile(r"event=http\.listening url=(http://\S+)")
TIMING = re.compile(r"app;dur=([0-9.]+)")
DETAILED = "detailed-execution"


def fill(url: str, executions: int) -> None:
    """N executions by SQL (set-based: about 40 s per million here), then VACUUM ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO zart_execution_runs (id, workflow, status, input, result, created_at, started_at,
                                                finished_at, updated_at)
               SELECT substr(md5(g::text), 1, 24), 'wf-' || (g %% 8),
                      CASE WHEN g %% 100 < 96 THEN 'completed' WHEN g %% 100 < 98 THEN 'failed'
                           WHEN g %% 100 = 98 THEN 'cancelled' ELSE 'waiting' END,
                      json_build_object('n', g), CASE WHEN g %% 100 < 96 THEN json_build_object('ok', g) END,
                      t, t, CASE WHEN g %% 100 < 99 THEN t + interval '1 second' END, t
               FROM generate_series(1, %(n)s) g,
                    LATERAL (SELECT now() - make_interval(secs => (%(n)s - g) * 2592000.0 / %(n)s))
                    AS s(t)""",
            {"n": executions},
        )
        conn.execute(
            "INSERT INTO zart_execution_runs (id, workflow, status, started_at)"
            " VALUES (%s, 'wf-1', 'running', now())",
            (DETAILED,),
        )
        conn.execute(
            """INSERT INTO zart_steps (execution_id, step_key, seq, status, output, attempts, started_at,
                                       finished_at)
               SELECT %(id)s, 'step-' || g || '#1', g, 'completed', '1', 1 + g %% 2,
                      now() - make_interval(secs => 40 - g), now() - make_interval(secs => 39.5 - g)
               FROM generate_series(0, 39) g""",
            {"id": DETAILED},
        )
        conn.execute(
            """INSERT INTO zart_step_attempts (execution_id, step_key, attempt, worker_id, started_at,
                                               finished_at, outcome)
               SELECT %(id)s, 'step-' || g || '#1', a, 'w', now() - make_interval(secs => 40 - g),
                      now() - make_interval(secs => 39.5 - g),
                      CASE WHEN a <= g %% 2 THEN 'failed' ELSE 'succeeded' END
               FROM generate_series(0, 39) g, generate_series(1, 1 + g %% 2) a""",
            {"id": DETAILED},
        )
        conn.execute("VACUUM ANALYZE")


@contextmanager
def serving(url: str) -> Iterator[str]:
    """`zart serve` on this database with a token; its base URL."""
    env = {**os.environ, "ZART_DATABASE_URL": url, "ZART_API_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "zart", "serve", "--port", "0"],
        env=env,
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    try:
        while True:
            line = process.stderr.readline()
            if not line:
                raise RuntimeError("zart serve exited before it listened")
            found = LISTENING.search(line)
            if found:
                break
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(60)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(http: httpx.Client, path: str, rounds: int) -> dict[str, float]:
    server: list[float] = []
    client: list[float] = []
    for number in range(rounds + 2):
        began = time.perf_counter()
        answer = http.get(path)
        took = (time.perf_counter() - began) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[-500:]}")
        if number >= 2:  # two warm-up requests: the pool's connections and prepared statements
            server.append(float(TIMING.search(answer.headers["server-timing"]).group(1)))
            client.append(took)
    return {
        "server_ms_p50": statistics.median(server),
        "server_ms_p95": _percentile(server, 0.95),
        "client_ms_p50": statistics.median(client),
    }


def _next_page(http: httpx.Client, path: str) -> str:
    found = re.search(r'id="next-page" href="([^"]+)"', http.get(path).text)
    if found is None:
        raise RuntimeError(f"{path} has no next page")
    return found.group(1).replace("&amp;", "&")


def cases(http: httpx.Client, url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        (prefix,) = conn.execute(
            "SELECT substr(id, 1, 4) FROM zart_execution_runs WHERE workflow = 'wf-3' LIMIT 1"
        ).fetchone()
    deep = "/executions"
    for _ in range(20):
        deep = _next_page(http, deep)
    week_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 7 * 86400))
    six_days_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 6 * 86400))
    return [
        ("executions: newest", "/executions"),
        ("executions: next page", _next_page(http, "/executions")),
        ("executions: 21st page", deep),
        ("executions: failed", "/executions?status=failed"),
        ("executions: one workflow", "/executions?workflow=wf-3"),
        ("executions: failed of one workflow", "/executions?status=failed&workflow=wf-3"),
        ("executions: waiting", "/executions?status=waiting"),
        ("executions: id prefix", f"/executions?id={prefix}"),
        ("executions: one day a week ago", f"/executions?since={week_ago}&until={six_days_ago}"),
        ("overview", "/"),
        ("one execution (40 steps)", "/executions/" + quote(DETAILED, safe="")),
        ("queues", "/queues"),
        ("schedules", "/schedules"),
    ]


def run(executions: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with fresh_database(server_url(), zart_schema=True) as url:
        began = time.perf_counter()
        fill(url, executions)
        filled = time.perf_counter() - began
        with serving(url) as base, httpx.Client(base_url=base, timeout=60) as http:
            assert http.post("/login", data={"token": TOKEN}).status_code == 303
            for name, path in cases(http, url):
                rows.append({"case": name, "executions": executions, **measure(http, path, rounds)})
    print(f"filled {executions:,} executions in {filled:.1f} s", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="one JSON line per page")
    options = parser.parse_args()
    rows = run(options.executions, options.rounds)
    if options.json:
        for row in rows:
            print(orjson.dumps(row).decode())
    else:
        print(table(rows, ["case", "server_ms_p50", "server_ms_p95", "client_ms_p50"]))


if __name__ == "__main__":
    main()
