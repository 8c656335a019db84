"""A real PostgreSQL primary with a synchronous streaming standby, on this machine, for failover tests.

    with ReplicatedCluster() as cluster:
        cluster.create_database("app")
        url = cluster.url("app")   # both nodes, target_session_attrs=read-write
        ...
        cluster.failover()         # stop the primary (fast), promote the standby

It runs the installed PostgreSQL binaries (initdb, pg_ctl, pg_basebackup), as the `postgres` OS user
when this process is root (initdb refuses root), on free ports (the tests run in parallel), with its
data directories under a temporary directory that is removed at the end, even after a failure.
Importable by the tests and by bench/ scripts: it needs no pytest (`skip_reason()` tells a test why
it cannot run).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

PG_BIN = Path(os.environ.get("ZART_PG_BIN", "/usr/lib/postgresql/15/bin"))
BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
STANDBY_NAME = "zart_standby"
HOST = "127.0.0.1"

# Settings of both nodes (the standby's data directory is a copy of the primary's).
# fsync and full_page_writes are off for speed: these clusters test failover logic, not disk
# durability, and a node is only ever stopped by pg_ctl (a crash of this machine loses the test
# anyway). Synchronous replication is what matters: a commit returns only once the standby has the
# WAL, so whatever a worker saw committed survives the failover.
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_directories": "''",  # TCP only: no socket paths to keep short or clean up
    "wal_level": "replica",
    "max_wal_senders": "5",
    "max_replication_slots": "5",
    "wal_keep_size": "'256MB'",
    "synchronous_standby_names": f"'{STANDBY_NAME}'",
    "synchronous_commit": "on",
    "hot_standby": "on",
    # A standby whose primary restarted reconnects within this (default 5 s, during which every
    # commit on the primary would wait for it).
    "wal_retrieve_retry_interval": "'200ms'",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "200",
    "max_wal_size": "'256MB'",
    "checkpoint_timeout": "'15min'",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}

HBA = f"""\
local all all trust
host all all {HOST}/32 trust
host replication all {HOST}/32 trust
"""


def skip_reason() -> str | None:
    """Why no cluster can be built here (None when one can)."""
    missing = [name for name in BINARIES if not (PG_BIN / name).exists()]
    if missing:
        return f"PostgreSQL binaries missing in {PG_BIN}: {', '.join(missing)}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run initdb as"
    return None


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick; a retry handles the race with others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _url(hosts: list[tuple[str, int]], dbname: str, **params: str) -> str:
    netloc = ",".join(f"{host}:{port}" for host, port in hosts)
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"postgresql://postgres@{netloc}/{dbname}" + (f"?{query}" if query else "")


class ClusterError(RuntimeError):
    pass


class Node:
    """One PostgreSQL server: its data directory, port and log."""

    def __init__(self, cluster: ReplicatedCluster, name: str, port: int) -> None:
        self.cluster = cluster
        self.name = name
        self.port = port
        self.datadir = cluster.base / name
        self.logfile = cluster.base / f"{name}.log"

    def url(self, dbname: str = "postgres") -> str:
        return _url([(HOST, self.port)], dbname)

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        self.cluster.run("pg_ctl", "-D", str(self.datadir), *args, timeout=timeout)

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.logfile))

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_primary(self) -> bool:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


class ReplicatedCluster:
    """A primary and a synchronous streaming standby (see the module's docstring).

    `timings` records how long building the pair, each failover and each restart took (seconds).
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        reason = skip_reason()
        if reason:
            raise ClusterError(reason)
        self._as_postgres = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="zart-pgcluster-", dir=base_dir))
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.nodes: list[Node] = []
        self.primary: Node | None = None
        self.standby: Node | None = None
        self.timings: dict[str, Any] = {"failovers": [], "restarts": []}

    # -- running the binaries -----------------------------------------------------------------

    def run(self, binary: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        options: dict[str, Any] = {}
        if self._as_postgres:
            options = {"user": "postgres", "group": "postgres", "extra_groups": []}
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        result = subprocess.run(
            [str(PG_BIN / binary), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.base,
            **options,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{binary} {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    # -- building the pair ---------------------------------------------------------------------

    def __enter__(self) -> ReplicatedCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        began = time.monotonic()
        self.primary = self._start_primary()
        self.standby = self._start_standby()
        self.wait_synchronous()
        self.timings["build"] = time.monotonic() - began

    def _start_primary(self) -> Node:
        node = Node(self, "node1", free_port())
        self.nodes.append(node)
        self.run(
            "initdb",
            "-D",
            str(node.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C",
        )
        lines = [f"{key} = {value}" for key, value in SETTINGS.items()]
        with open(node.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# zart test cluster\n" + "\n".join(lines) + "\n")
        (node.datadir / "pg_hba.conf").write_text(HBA)
        self._start_on_a_free_port(node)
        return node

    def _start_on_a_free_port(self, node: Node) -> None:
        """Start the node; if another process took its port meanwhile, try another port."""
        for attempt in range(5):
            self._write_port(node)
            try:
                node.start()
                return
            except ClusterError:
                if attempt == 4 or ("could not bind" not in node.log() and "in use" not in node.log()):
                    raise ClusterError(f"{node.name} did not start:\n{node.log()}") from None
                node.port = free_port()

    def _write_port(self, node: Node) -> None:
        # postgresql.auto.conf wins over postgresql.conf: each node's own port goes there.
        auto = node.datadir / "postgresql.auto.conf"
        kept = [line for line in auto.read_text().splitlines() if not line.startswith("port = ")]
        auto.write_text("\n".join([*kept, f"port = {node.port}"]) + "\n")

    def _start_standby(self) -> Node:
        assert self.primary is not None
        node = Node(self, "node2", free_port())
        self.nodes.append(node)
        conninfo = f"host={HOST} port={self.primary.port} user=postgres application_name={STANDBY_NAME}"
        self.run(
            "pg_basebackup",
            "-d",
            conninfo,
            "-D",
            str(node.datadir),
            "-R",  # standby.signal, and primary_conninfo from -d (its application_name included)
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        auto = node.datadir / "postgresql.auto.conf"
        text = auto.read_text()
        if f"application_name={STANDBY_NAME}" not in text:
            raise ClusterError(f"pg_basebackup -R left no application_name in primary_conninfo:\n{text}")
        # Once promoted, this node has no standby of its own: were it to keep the primary's
        # synchronous_standby_names, its every commit would wait forever. Set here rather than after
        # the promotion, so that no commit can reach it in between (a standby ignores the setting).
        auto.write_text(text + "synchronous_standby_names = ''\n")
        self._start_on_a_free_port(node)
        return node

    def wait_synchronous(self, timeout: float = 30) -> None:
        """Until the primary reports the standby streaming as its synchronous standby."""
        assert self.primary is not None
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                    (STANDBY_NAME,),
                ).fetchone()
                if row == ("streaming", "sync"):
                    return
                if time.monotonic() > deadline:
                    raise ClusterError(f"the standby is not synchronous after {timeout}s: {row}")
                time.sleep(0.02)

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary wrote so far (a synchronous commit
        waits for the standby to have the WAL, not to have applied it: reads there may lag)."""
        assert self.primary is not None and self.standby is not None
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            while True:
                if conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                    return
                if time.monotonic() > deadline:
                    raise ClusterError(f"the standby has not replayed {target} after {timeout}s")
                time.sleep(0.01)

    # -- using it ------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """Both nodes, the read-write one wins: the URL that follows a failover."""
        return _url([(HOST, node.port) for node in self.nodes], dbname, target_session_attrs="read-write")

    def create_database(self, name: str) -> str:
        """Create it on the primary (it replicates); its multi-host URL."""
        assert self.primary is not None
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def failover(self) -> dict[str, float]:
        """Stop the primary (fast shutdown), promote the standby: the seconds each took.

        The old primary stays down; the promoted node is the primary, with no standby.
        """
        assert self.primary is not None and self.standby is not None, "no standby left to promote"
        began = time.monotonic()
        self.primary.stop("fast")
        stopped = time.monotonic()
        self.standby.pg_ctl("promote", "-w", "-t", "60")
        promoted = time.monotonic()
        self.primary, self.standby = self.standby, None
        timing = {"stop": stopped - began, "promote": promoted - stopped, "total": promoted - began}
        self.timings["failovers"].append(timing)
        return timing

    def restart_primary(self) -> float:
        """`pg_ctl restart -m fast` of the current primary (the same server comes back): the seconds
        until it accepted connections again; then, if it has a standby, waits for it to be
        synchronous again (`timings["resynced"]`)."""
        assert self.primary is not None
        began = time.monotonic()
        self.primary.pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.primary.logfile))
        seconds = time.monotonic() - began
        if self.standby is not None:
            self.wait_synchronous()  # until then, every commit waits for the standby to reconnect
            self.timings.setdefault("resynced", []).append(time.monotonic() - began)
        self.timings["restarts"].append(seconds)
        return seconds

    def close(self) -> None:
        """Stop every node still running and remove the directories, whatever state they are in."""
        for node in self.nodes:
            if node.running():
                with contextlib.suppress(Exception):
                    node.stop("immediate")
            if node.running():  # pg_ctl failed: end the postmaster by its pid
                with contextlib.suppress(Exception):
                    pid = int((node.datadir / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, 9)
        shutil.rmtree(self.base, ignore_errors=True)
