"""Connections that outlive their server: what a restart or a failover leaves behind in a pool.

(The failover itself, with a real standby promoted, is tests/test_failover.py.)
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import psycopg
import pytest
from psycopg import conninfo

import zart
from tests.apps import core_app as app
from tests.apps import events_app
from zart.db import KEEPALIVES, connect, open_pool, unreachable
from zart.errors import DatabaseUnavailable
from zart.pools import shared_pool

from .helpers import scalar, wait_until


def _client_socket_option(conn: psycopg.Connection, option: int) -> int:
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, option)
    finally:
        sock.close()


def test_every_connection_has_tcp_keepalives_unless_its_url_sets_them(database_url):
    """Read off the client's own socket (the server's SHOW tells of its side only)."""
    with connect(database_url) as conn:
        assert _client_socket_option(conn, socket.TCP_KEEPIDLE) == 10
        assert _client_socket_option(conn, socket.TCP_KEEPINTVL) == 5
        assert _client_socket_option(conn, socket.TCP_KEEPCNT) == 3
        assert _client_socket_option(conn, socket.TCP_USER_TIMEOUT) == 30000
    with connect(database_url + " keepalives_idle=42") as conn:
        assert _client_socket_option(conn, socket.TCP_KEEPIDLE) == 42
    assert set(KEEPALIVES) >= {"keepalives", "keepalives_idle", "tcp_user_timeout"}


def test_a_client_pool_hands_out_no_connection_its_server_closed_while_idle(fresh_database_url):
    """After a restart or a failover every idle pooled connection is dead. The pool's check sees
    it without a round trip (the server's goodbye is waiting on the socket) and opens another,
    so the first zart.start after it succeeds instead of failing."""
    url = fresh_database_url
    zart.start(app.three_steps, {"n": 1}, database_url=url)
    pool = shared_pool(url)
    with pool.connection() as conn:
        backend = conn.info.backend_pid
    assert scalar(url, "SELECT pg_terminate_backend(%s)", [backend]) is True
    wait_until(lambda: not scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend]))
    for n in range(5):  # every pooled connection, the dead one included, is handed out in turn
        handle = zart.start(app.three_steps, {"n": n}, database_url=url)
        assert handle.id


def test_a_standby_is_refused_at_connect_unless_the_connection_only_reads(replicated_cluster):
    """A name that still leads to the old primary after a failover reaches a standby: Zart's
    connections ask for a server that accepts writes (unless their URL says otherwise), so it is
    refused at connect, as an outage to wait out, never used for a write that fails later. A reader
    that may use a standby (zart replay-check) connects."""
    standby = replicated_cluster.standby
    assert standby is not None
    with pytest.raises(DatabaseUnavailable, match=r"read-only|hot standby") as refused:
        connect(standby.url(), timeout=3)
    assert unreachable(refused.value)  # waited for, not a configuration error
    with connect(standby.url(), writes=False) as reader:
        assert reader.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
    # Both hosts, the standby first: the pool's connections go to the primary.
    nodes = [standby, replicated_cluster.primary]
    url = "postgresql://postgres@" + ",".join(f"127.0.0.1:{node.port}" for node in nodes) + "/postgres"
    pool = open_pool(url, min_size=1, max_size=1, name="zart-test-standby-first")
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    finally:
        pool.close()


def test_the_engines_own_transactions_end_when_left_open_longer_than_a_lease(database_url):
    """A worker stopped in the middle of a transaction (SIGSTOP) would hold its row locks, and keep
    its tasks from the workers that claim them with SKIP LOCKED once its lease ran out, for as long
    as it stays stopped. The server ends such a transaction after one lease."""
    with zart.Worker(database_url, lease="7s") as worker:
        pool = worker._pool
        assert pool is not None
        with pool.connection() as conn:
            assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "7s"
            assert conn.execute("SHOW application_name").fetchone()[0] == "zart-worker"


def test_a_due_task_locked_by_another_transaction_does_not_make_the_claimer_spin(
    fresh_database_url, monkeypatch
):
    """The claim passes over locked rows (SKIP LOCKED) and the next due time is then "now": the
    claimer used to claim again at once, hundreds of times a second, for as long as the lock was
    held (a SIGSTOPped worker's transaction). It backs off instead, and claims once the lock goes."""
    url = fresh_database_url
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", url)
    with zart.Worker(url, poll_interval="60s") as worker, psycopg.connect(url) as holder:
        handle = zart.start(events_app.sleeper, {"seconds": 1.5}, database_url=url)
        wait_until(
            lambda: (
                scalar(
                    url,
                    "SELECT count(*) FROM zart_steps WHERE execution_id = %s AND kind = 'sleep'",
                    [handle.id],
                )
                and scalar(
                    url,
                    "SELECT count(*) FROM zart_tasks WHERE claimed_by IS NULL AND execution_id = %s",
                    [handle.id],
                )
            ),
            what="the execution to sleep, its task handed back",
        )
        holder.execute("SELECT 1 FROM zart_tasks WHERE execution_id = %s FOR UPDATE", [handle.id]).fetchall()
        wait_until(
            lambda: scalar(url, "SELECT count(*) FROM zart_tasks WHERE run_at <= now()") == 1,
            what="the wake-up",
        )
        before = worker._state.claim_queries
        wait_until(lambda: worker._state.claim_queries >= before + 3, what="claims while the row is locked")
        began = time.monotonic()
        time.sleep(1.0)  # a window to count claims in, not a wait for a condition
        during = worker._state.claim_queries - before
        holder.rollback()
        assert handle.result(timeout=10) == ["before", "after"]
    assert during <= 15, f"{during} claim queries in {time.monotonic() - began:.1f} s with the row locked"


def test_zart_serve_started_during_an_outage_waits_for_the_database(fresh_database_url):
    """Started while nothing answers at its URL (a failover under way, PostgreSQL still starting),
    `zart serve` logs the outage once and waits; once the address answers it migrates and serves.
    It used to exit at once, leaving its restart to a process manager's back-off."""
    from .tcpproxy import TcpProxy
    from .test_http import ServeProcess, server_env

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there for now
    params = conninfo.conninfo_to_dict(fresh_database_url)
    later = conninfo.make_conninfo("", **{**params, "host": "127.0.0.1", "port": str(port)})
    server = ServeProcess(server_env(later))
    proxy = None
    try:
        wait_until(lambda: "event=database.unavailable" in server.log(), what="the outage to be logged")
        assert server.process.poll() is None, server.log()
        proxy = TcpProxy((params.get("host") or "127.0.0.1", int(params.get("port") or 5432)), port=port)
        url = server.wait_ready()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert "event=database.reconnected" in server.log()
    finally:
        assert server.stop() == 0, server.log()
        if proxy is not None:
            proxy.close()
