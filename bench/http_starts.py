"""Starts per second through the HTTP API: `POST /v1/executions` from many concurrent clients.

    python -m bench.http_starts --clients 64 --starts 6000

Starts one `zart serve` process (`--app bench.apps`, no token) on a fresh database, then `clients`
trio tasks in this process, each on its own keep-alive HTTP/1.1 connection, post starts of the
3-step bench workflow one after another until `starts` are done. A small client of our own (a
request is a few hundred bytes written and one response read) so that the load generator costs
little of the 2 cores the server and PostgreSQL share; locust (bench/load.py) spends more CPU per
request than the server does. Reports starts/s, latency percentiles, the server's CPU time per
start, and checks that every start answered 201 and left one execution row.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psycopg
import trio

from .harness import checkout, process_tree_cpu
from .throughput import FreshDatabase, server_url

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"event=http\.listening url=http://([^:/]+):(\d+)")


async def _read_response(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, body)."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head_end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:head_end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(buffer) < head_end + length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        buffer += chunk
    body = bytes(buffer[head_end : head_end + length])
    del buffer[: head_end + length]
    return status, body


def _request(host: str, port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/executions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _load(host: str, port: int, clients: int, starts: int) -> tuple[float, list[float], list[int]]:
    left = starts
    latencies: list[float] = []
    statuses: list[int] = []
    request = _request(host, port, orjson.dumps({"workflow": "bench-steps", "input": 3}))

    async def client() -> None:
        nonlocal left
        stream = await trio.open_tcp_stream(host, port)
        buffer = bytearray()
        async with stream:
            while left > 0:
                left -= 1
                began = time.perf_counter()
                await stream.send_all(request)
                status, _ = await _read_response(stream, buffer)
                latencies.append(time.perf_counter() - began)
                statuses.append(status)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    return time.perf_counter() - began, latencies, statuses


def _healthy(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _serve(url: str, log: Any, workers: int) -> tuple[subprocess.Popen[bytes], str, int]:
    env = dict(os.environ, ZART_DATABASE_URL=url)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ZART_API_TOKEN", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zart",
            "serve",
            "--app",
            "bench.apps",
            "--port",
            "0",
            "--workers",
            str(workers),
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("zart serve exited; see its log")
        log.flush()
        found = LISTENING.search(Path(log.name).read_text())
        if found and _healthy(found.group(1), int(found.group(2))):
            return server, found.group(1), int(found.group(2))
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("zart serve did not start listening in time")


def run(clients: int, starts: int, workers: int = 1) -> dict[str, Any]:
    results = REPO_ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    with FreshDatabase(server_url()) as database, open(results / "http-starts-serve.log", "w+") as log:
        server, host, port = _serve(database.url, log, workers)
        try:
            trio.run(_load, host, port, 4, 40)  # warm-up: pools, the group's flusher, the plans
            cpu_before = sum(process_tree_cpu(server.pid).values())
            seconds, latencies, statuses = trio.run(_load, host, port, clients, starts)
            server_cpu = sum(process_tree_cpu(server.pid).values()) - cpu_before
        finally:
            server.terminate()
            server.wait(30)
        with psycopg.connect(database.url, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM zart_execution_runs").fetchone()[0] - 40
    bad = [status for status in statuses if status != 201]
    if bad or rows != starts:
        raise RuntimeError(f"{len(bad)} starts answered other than 201 ({sorted(set(bad))}); {rows} rows")
    latencies.sort()
    return {
        "benchmark": "http-starts",
        "engine": checkout(),
        "clients": clients,
        "server_processes": workers,
        "starts": starts,
        "seconds": round(seconds, 3),
        "starts_per_s": round(starts / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * len(latencies)) - 1], 1),
        "server_cpu_us_per_start": round(1e6 * server_cpu / starts, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--starts", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=1, help="zart serve --workers (processes)")
    args = parser.parse_args(argv)
    print(orjson.dumps(run(args.clients, args.starts, args.workers)).decode())


if __name__ == "__main__":
    main()
