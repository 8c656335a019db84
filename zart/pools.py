"""This process's client pools: one per database URL, migrated on first use.

Clients (zart.start, the CLI, the HTTP API) share one small pool per process and database; the
first use of a database migrates it, so that a fresh database works without a separate step. Pools
do not survive a fork: each process opens its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from .db import open_pool
from .schema import ensure_migrated

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
            ensure_migrated(url)
            pool = open_pool(url, min_size=1, max_size=8, name="zart-client")
            _pools[key] = pool
        return pool


@contextmanager
def transaction(url: str, isolation: psycopg.IsolationLevel | None = None) -> Iterator[psycopg.Connection]:
    """A pooled connection inside one transaction (at `isolation`, if given)."""
    with shared_pool(url).connection() as conn:
        conn.isolation_level = isolation
        try:
            with conn.transaction():
                yield conn
        finally:
            conn.isolation_level = None


def close_pools(url: str | None = None) -> None:
    """Close this process's client pools (for `url`, or all): before dropping a database, say."""
    with _pools_lock:
        for key in [key for key in _pools if url is None or key[1] == url]:
            _pools.pop(key).close()
