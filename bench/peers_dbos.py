"""DBOS's side of bench/peers.py: the same three-step workflow, and the processes that run it.

    python -m bench.peers_dbos supervise --url URL --procs P [--local WORKFLOWS]

starts P worker processes (this module's `worker` command), each a DBOS application launched on the
system database at URL with its own executor id, and stops them on SIGTERM, as `zart supervise`
does for Zart. Every worker prints `peers-dbos worker ready` on stderr once DBOS is launched.

- Queue mode (the default): the workers dequeue from the queue `peers`, which bench/peers.py
  registers with DBOSClient before they start; a client outside the workers enqueues.
- `--local N`: no queue. Each worker starts its share of the N workflows itself with
  `DBOS.start_workflow` (DBOS's in-process start: the workflow runs in the process that starts it),
  once it reads one byte on stdin, then waits for their results and prints one JSON line on stdout.

Needs the `peers` extra (`pip install -e '.[peers]'`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
from dbos import DBOS, DBOSConfig

APP = "zart-peers"
VERSION = "peers"  # one application version for every worker and the client's enqueues
QUEUE = "peers"
WORKFLOW = "peers_add_three"
READY = "peers-dbos worker ready"


@DBOS.step(name="peers_add_one")
def add_one(n: int) -> int:
    return n + 1


@DBOS.workflow(name=WORKFLOW)
def add_three(n: int) -> int:
    n = add_one(n)
    n = add_one(n)
    return add_one(n)


def launch(url: str, executor_id: str) -> None:
    """DBOS launched as one application process: its own executor id (what `worker_concurrency`
    counts by), the fixed version the client's enqueues name, the schema migrated already."""
    config: DBOSConfig = {
        "name": APP,
        "system_database_url": url,
        "executor_id": executor_id,
        "application_version": VERSION,
        "log_level": "WARNING",
        "run_migrations": False,
    }
    DBOS(config=config)
    DBOS.launch()


def run_local(index: int, procs: int, workflows: int) -> dict[str, Any]:
    """This worker's share of the workflows (inputs index, index + procs, ...), started with
    DBOS.start_workflow one after another, then their results; timestamps for the caller."""
    inputs = list(range(index, workflows, procs))
    began = time.time()
    handles = [DBOS.start_workflow(add_three, n) for n in inputs]
    results = [handle.get_result() for handle in handles]
    return {
        "index": index,
        "workflows": len(inputs),
        "began": began,
        "ended": time.time(),
        "wrong": sum(result != n + 3 for n, result in zip(inputs, results, strict=True)),
    }


def worker(args: argparse.Namespace) -> None:
    launch(args.url, f"peers-{args.index}")
    print(READY, file=sys.stderr, flush=True)
    if args.local:
        if not os.read(0, 1):  # the go signal: one byte for each worker
            return
        report = run_local(args.index, args.procs, args.local)
        os.write(1, orjson.dumps(report) + b"\n")  # one short write: the lines of workers never mix
    threading.Event().wait()  # until SIGTERM: the CPU meter reads the workers alive


def supervise(args: argparse.Namespace) -> None:
    command = [
        sys.executable,
        "-m",
        "bench.peers_dbos",
        "worker",
        "--url",
        args.url,
        "--procs",
        str(args.procs),
    ]
    if args.local:
        command += ["--local", str(args.local)]
    children = [subprocess.Popen([*command, "--index", str(i)]) for i in range(args.procs)]

    def stop(*_: object) -> None:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["supervise", "worker"])
    parser.add_argument("--url", required=True, help="the system database, as a postgresql:// URL")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--index", type=int, default=0, help="this worker's number (worker only)")
    parser.add_argument("--local", type=int, default=0, help="start this many workflows in the workers")
    args = parser.parse_args(argv)
    (supervise if args.command == "supervise" else worker)(args)


if __name__ == "__main__":
    main()
