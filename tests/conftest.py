"""Fixtures: a real PostgreSQL, a fresh database per test session (or per test), real workers.

PostgreSQL comes from $ZART_TEST_DATABASE_URL, else the server on 127.0.0.1:5432 if it answers,
else the embedded server (pgserver) in a temporary directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

import zart
from zart.schema import migrate

from . import pgcluster
from .helpers import EFFECTS_TABLE_SQL, local_server_url, worker_env
from .pgcluster import ReplicatedCluster

REPO_ROOT = Path(__file__).resolve().parent.parent


def _server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = local_server_url()
    if url:
        return url
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="delete")
    return server.get_uri()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _server_url(tmp_path_factory)


def _create_database(server_url: str, template: str | None = None) -> tuple[str, str]:
    name = f"zart_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    params = conninfo.conninfo_to_dict(server_url)
    params["dbname"] = name
    return name, conninfo.make_conninfo(**params)


def _drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrated_database(server_url: str) -> Iterator[str]:
    name, url = _create_database(server_url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(EFFECTS_TABLE_SQL)
    yield url
    _close_client_pools()
    _drop_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """One migrated database for the whole test session, dropped at the end."""
    yield from _migrated_database(server_url)


@pytest.fixture(scope="session")
def migrated_template(server_url: str) -> Iterator[str]:
    """The name of a migrated database (with the effects table) that nobody connects to: each
    fresh database is a copy of it, which is quicker than migrating one (every test process has
    its own, as a template must have no other session while it is copied)."""
    name, url = _create_database(server_url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(EFFECTS_TABLE_SQL)
    yield name
    _drop_database(server_url, name)


@pytest.fixture
def fresh_database_url(server_url: str, migrated_template: str) -> Iterator[str]:
    """A database of the test's own (for tests that count rows across the whole schema)."""
    name, url = _create_database(server_url, template=migrated_template)
    yield url
    _close_client_pools()
    _drop_database(server_url, name)


def _close_client_pools() -> None:
    from zart.pools import close_pools

    close_pools()


@pytest.fixture
def replicated_cluster() -> Iterator[ReplicatedCluster]:
    """A primary and a synchronous streaming standby of the test's own (tests/pgcluster.py)."""
    reason = pgcluster.skip_reason()
    if reason:
        pytest.skip(reason)
    with ReplicatedCluster() as cluster:
        yield cluster


@pytest.fixture
def worker(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[zart.Worker]:
    """An in-process worker on the session database; the test apps' effects go there too."""
    monkeypatch.setenv("ZART_TEST_EFFECTS_URL", database_url)
    with zart.Worker(database_url, lease="2s", poll_interval="0.5s") as running:
        yield running


@pytest.fixture
def subprocess_env(database_url: str) -> dict[str, str]:
    return worker_env(database_url)
