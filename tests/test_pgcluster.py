"""The failover harness itself (tests/pgcluster.py): a real primary and a synchronous standby."""

from __future__ import annotations

import psycopg
import pytest

from .helpers import query, scalar


def execute(url: str, statement: str, params: object = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def test_write_on_the_primary_read_on_the_standby_fail_over_write_on_the_new_primary(replicated_cluster):
    cluster = replicated_cluster
    print(f"built in {cluster.timings['build']:.2f} s")
    assert cluster.timings["build"] < 10
    old_primary, standby = cluster.primary, cluster.standby
    assert old_primary.is_primary() and not standby.is_primary()
    url = cluster.create_database("harness")
    assert url.count("127.0.0.1:") == 2 and url.endswith("/harness?target_session_attrs=read-write")

    execute(url, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
    execute(url, "INSERT INTO notes VALUES (1, 'before')")
    # The standby is the synchronous one, by the name pg_basebackup -R gave it.
    assert query(old_primary.url(), "SELECT application_name, sync_state FROM pg_stat_replication") == [
        ("zart_standby", "sync")
    ]
    assert scalar(old_primary.url(), "SHOW synchronous_commit") == "on"
    cluster.wait_replayed()
    assert query(standby.url("harness"), "SELECT body FROM notes") == [("before",)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        execute(standby.url("harness"), "INSERT INTO notes VALUES (2, 'on the standby')")

    # A restart of the primary (the same server): the standby reconnects and is synchronous again.
    seconds = cluster.restart_primary()
    resynced = cluster.timings["resynced"][-1]
    print(f"restart of the primary: {seconds:.2f} s, synchronous again after {resynced:.2f} s")
    execute(url, "INSERT INTO notes VALUES (10, 'after the restart')")
    cluster.wait_replayed()
    assert scalar(standby.url("harness"), "SELECT count(*) FROM notes") == 2
    execute(url, "DELETE FROM notes WHERE id = 10")

    timing = cluster.failover()
    print(f"failover: {timing}")
    assert not old_primary.running()
    assert cluster.primary is standby and standby.is_primary()
    # The same multi-host URL now reaches the promoted node, which has every committed row, and
    # commits without a synchronous standby (it would hang if it waited for one).
    execute(url, "INSERT INTO notes VALUES (2, 'after')", None)
    assert query(url, "SELECT body FROM notes ORDER BY id") == [("before",), ("after",)]
    assert scalar(url, "SELECT inet_server_port()") == standby.port

    seconds = cluster.restart_primary()
    print(f"restart of the new primary: {seconds:.2f} s")
    execute(url, "INSERT INTO notes VALUES (3, 'after the restart')")
    assert scalar(url, "SELECT count(*) FROM notes") == 3


def test_cleanup_stops_the_servers_and_removes_the_directories_even_after_a_failure():
    from .pgcluster import ReplicatedCluster, skip_reason

    if skip_reason():
        pytest.skip(skip_reason())
    with pytest.raises(RuntimeError, match="boom"), ReplicatedCluster() as cluster:
        ports = [node.port for node in cluster.nodes]
        raise RuntimeError("boom")
    assert not cluster.base.exists()
    for port in ports:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2).close()
