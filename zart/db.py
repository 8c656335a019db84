"""Connections: which database, how to reach it, and one pool per process.

psycopg's AsyncConnection needs asyncio and does not run under trio, so Zart drives psycopg's *sync*
connections and pools; code running under trio hops to a thread once per whole transaction (see
`zart.worker`), never once per statement.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import ConfigurationError, DatabaseUnavailable

ENV_URL = "ZART_DATABASE_URL"


def resolve_url(database_url: str | None = None) -> str:
    """The explicit URL, else $ZART_DATABASE_URL, else the embedded server's."""
    url = database_url or os.environ.get(ENV_URL)
    if url:
        return url
    from .embedded import embedded_url

    return embedded_url()


def redact(url: str) -> str:
    """The URL (or `key=value` connection string) without its password, for error messages and logs."""
    url = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def with_session_settings(url: str, application_name: str, settings: dict[str, str]) -> str:
    """`url` whose connections start with these settings (`-c name=value` options) and this name.

    The settings travel in the connection string, so every connection of a pool opened on it carries
    them from its first statement, and a pool for it is another pool than the one for `url`.
    """
    params = conninfo.conninfo_to_dict(url)
    options = [params["options"]] if params.get("options") else []
    options += [f"-c {name}={value}" for name, value in settings.items()]
    params.update(options=" ".join(options), application_name=application_name)
    return conninfo.make_conninfo("", **params)


def _configure(conn: psycopg.Connection) -> None:
    # Zart's values come back as the exact text stored (`::text` in the queries) and are decoded
    # with orjson by the caller, so no json loader is registered here.
    conn.prepare_threshold = 1  # hot statements are prepared on their second use


def connect(url: str, *, autocommit: bool = True, timeout: float = 10.0) -> psycopg.Connection:
    """A plain connection, with a clear error when the server cannot be reached."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact(url)}: {first_line(exc)}"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid database URL {redact(url)}: {first_line(exc)}") from None
    _configure(conn)
    return conn


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_pool(url: str, *, min_size: int = 1, max_size: int = 4, name: str = "zart") -> ConnectionPool:
    """A pool of autocommit connections; fails fast with DatabaseUnavailable."""
    try:
        # Validate the URL (and reachability) with one direct connection: the pool alone would
        # only report a generic timeout.
        connect(url, timeout=5).close()
        pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            name=name,
            open=False,
        )
        pool.open(wait=True, timeout=10)
    except PoolTimeout:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(url)}") from None
    return pool


_pools: dict[tuple[int, str], ConnectionPool] = {}
_pools_lock = threading.Lock()


def shared_pool(url: str) -> ConnectionPool:
    """This process's client pool for `url` (one per process: pools do not survive a fork)."""
    key = (os.getpid(), url)
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            from .schema import ensure_migrated

            ensure_migrated(url)
            pool = open_pool(url, min_size=1, max_size=8, name="zart-client")
            _pools[key] = pool
        return pool


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """A pooled connection inside one transaction."""
    with shared_pool(url).connection() as conn, conn.transaction():
        yield conn


def close_pools(url: str | None = None) -> None:
    """Close this process's client pools (for `url`, or all): before dropping a database, say."""
    with _pools_lock:
        for key in [key for key in _pools if url is None or key[1] == url]:
            _pools.pop(key).close()
