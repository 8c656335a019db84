"""Connections: which database, how to reach it, and one pool per process.

psycopg's AsyncConnection needs asyncio and does not run under trio, so Zart drives psycopg's *sync*
connections and pools; code running under trio hops to a thread once per whole transaction (see
`zart.worker`), never once per statement.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import ConfigurationError, DatabaseUnavailable
from .logs import log_event

T = TypeVar("T")

ENV_URL = "ZART_DATABASE_URL"

# Connection failures that waiting will not cure: the server answered, and refused who we are or
# what we asked for. libpq reports them without an SQLSTATE, so they are told apart by the server's
# (English) message. Everything else (refused, timed out, starting up, shutting down, not accepting
# connections, too many clients) is an outage that long-running processes wait out.
_CONFIGURATION_PROBLEMS = re.compile(
    r"does not exist"  # database or role
    r"|authentication failed"  # password, scram, peer, ident, gss...
    r"|no pg_hba\.conf entry|pg_hba\.conf rejects"
    r"|no password supplied|password is required"
    r"|permission denied for database"
    r"|invalid (connection option|sslmode|integer value|port)",
    re.IGNORECASE,
)

# How long a pool with `keep_reconnecting` tries one connection before starting over (see open_pool).
_RECONNECT_SECONDS = 1.0


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
    # JIT compilation pays off for long analytical queries, never for Zart's short ones: the claim's
    # many CTEs over small tables without statistics get cost estimates past jit_above_cost, and
    # compiling them took 80 ms of every 1 ms claim. And every prepared statement keeps its generic
    # plan: each of Zart's statements is written so that its generic plan stays on its indexes
    # (tests/test_query_plans.py checks the hot ones both ways), while PostgreSQL's own choice
    # re-planned every start once zart_execution_runs was large (0.6 ms of planning per start:
    # 1,400 starts/s instead of 2,100). But a generic plan is made once per connection, and a
    # worker's first claims and commits come while its tables are new and empty, which the planner
    # takes for ten pages: for those it chose sequential scans (`id = ANY(...)` over all of
    # zart_tasks, every pending execution read through the status index), kept for the
    # connection's life, each claim then growing with the backlog (5 ms for 50 tasks at 3,000
    # pending). Every Zart statement is served by an index (tests/test_query_plans.py), so
    # sequential scans are off: a plan made on an empty table still takes the index.
    # All three for Zart's own connections only.
    settings = "SET jit = off; SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off"
    if conn.autocommit:
        conn.execute(settings)
    else:
        with conn.transaction():
            conn.execute(settings)


# TCP keepalives for every connection whose URL does not set its own: without them a connection to a
# server that vanished without a goodbye (a failed-over host, a cut network) looks alive for the
# kernel's two hours, and a worker's LISTEN connection, or a statement waiting for its answer, would
# wait as long. A dead peer is noticed within about 10 + 3 x 5 s, and data left unacknowledged for 30 s
# ends the connection (tcp_user_timeout, Linux). Each is an outage like any other: retried.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


def _defaults(url: str, writes: bool = True) -> dict[str, str]:
    """The connection settings `url` leaves unset, as keyword arguments (psycopg's override the
    URL's): the keepalives over TCP, and, for a connection that writes, a server that accepts
    writes (`target_session_attrs=read-write`).

    The latter is the one place standbys are kept out: a name that still leads to the old primary
    after a failover (a DNS endpoint, a virtual IP being moved) reaches a standby, which libpq then
    refuses at connect (from the parameters the server reports, no query), and the connection is
    retried like any other outage. A server never turns read-only under an open connection (a
    primary becomes a standby only through a restart), so no statement has to check it later.
    """
    try:
        given = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return {}  # connect() reports the malformed URL
    defaults: dict[str, str] = {}
    if not str(given.get("host", "")).startswith("/"):  # not a Unix socket: TCP
        defaults.update(KEEPALIVES)
    if writes:
        defaults["target_session_attrs"] = "read-write"
    return {name: value for name, value in defaults.items() if name not in given}


def check_alive(conn: psycopg.Connection) -> None:
    """A pool's check of a connection it hands out, without a round trip: an idle connection has
    nothing to read, unless its server closed it (a restart, a failover: PostgreSQL says goodbye
    with an error, then closes). Raises then, and the pool hands out another one instead, so the
    first statement after a failover does not fail on a connection that died while idle. (A
    connection whose server vanished without a word is noticed by its keepalives instead.)"""
    if conn.closed or _readable(conn.pgconn.socket):
        # Readable while idle: a goodbye, or the end of the stream (anything else, a notice say,
        # is rare enough that a new connection costs nothing worth keeping this one for).
        conn.close()  # else the pool takes it back as it is, and hands it out again
        raise psycopg.OperationalError("the server closed or wrote to the connection while it was idle")


def _readable(fd: int) -> bool:
    """Whether `fd` has something to read now (poll, not select: an application with more than
    1,024 open files has descriptors select() cannot take)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def connect(
    url: str, *, autocommit: bool = True, timeout: float = 10.0, writes: bool = True
) -> psycopg.Connection:
    """A plain connection, with a clear error when the server cannot be reached.

    `DatabaseUnavailable` when the server cannot be reached now (an outage: worth waiting for),
    `ConfigurationError` when it answered and refused the URL's user, password or database (no
    amount of waiting helps: the caller must fail at once). `writes=False`: a reader that may use
    a standby (zart replay-check).
    """
    try:
        conn = psycopg.connect(
            url, autocommit=autocommit, connect_timeout=max(1, int(timeout)), **_defaults(url, writes)
        )
    except psycopg.OperationalError as exc:
        message = f"cannot connect to PostgreSQL at {redact(url)}: {first_line(exc)}"
        if _CONFIGURATION_PROBLEMS.search(str(exc)):
            raise ConfigurationError(message) from None
        raise DatabaseUnavailable(message) from None
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid database URL {redact(url)}: {first_line(exc)}") from None
    _configure(conn)
    return conn


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` means "the database cannot be reached right now" (an outage to wait out), as
    opposed to a configuration error or a bug, which no retry cures."""
    if isinstance(exc, BaseExceptionGroup):  # from a trio nursery
        return all(unreachable(inner) for inner in exc.exceptions)
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, psycopg.OperationalError):  # a lost connection, a pool timeout, a shutdown
        return not _CONFIGURATION_PROBLEMS.search(str(exc))
    return isinstance(exc, OSError)


# SQLSTATE classes that say "try again" rather than "this data is wrong": connection exceptions,
# transaction rollbacks (serialization failures, deadlocks), insufficient resources, operator
# intervention (shutdown, query cancelled, statement timeout) and system errors.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says the database is (for now) unreachable or busy, not that the data is bad.

    The distinction decides between retrying a batch as it is and looking for the one execution
    whose values PostgreSQL refuses. An error with a SQLSTATE is judged by its class (a program
    limit exceeded, say, is an OperationalError but no retry cures it); one without is transient
    when the database is `unreachable`.
    """
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    if state is not None:
        return state[:2] in _TRANSIENT_CLASSES or state == "55P03"  # 55P03: lock_not_available
    return unreachable(exc)


class Outage:
    """The bookkeeping of waiting out an unreachable database, shared by every place that does it.

    `failed(exc)` re-raises what waiting will not cure, logs `database.unavailable` on the first
    failure and returns how long to wait before the next try (doubling up to `retry_seconds`);
    `ended()` logs `database.reconnected` if there was an outage. How to wait is the caller's: a
    thread sleeps, the worker's trio loop also listens for signals meanwhile.
    """

    def __init__(self, logger: logging.Logger, retry_seconds: float = 1.0, **fields: Any) -> None:
        self._logger = logger
        self._retry_seconds = retry_seconds
        self._fields = fields
        self._lost_at: float | None = None
        self._delay = 0.1

    def failed(self, exc: Exception) -> float:
        if not unreachable(exc):
            raise exc
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log_event(
                self._logger,
                "database.unavailable",
                logging.WARNING,
                **self._fields,
                error=first_line(exc),
                retrying_every=self._retry_seconds,
            )
        delay, self._delay = self._delay, min(self._delay * 2, self._retry_seconds)
        return delay

    def ended(self) -> None:
        if self._lost_at is not None:
            after = round(time.monotonic() - self._lost_at, 1)
            log_event(self._logger, "database.reconnected", **self._fields, after_seconds=after)
            self._lost_at = None


def call_when_reachable(fn: Callable[[], T], logger: logging.Logger, retry_seconds: float = 1.0) -> T:
    """`fn()`, retried while the database cannot be reached (a long-running command starting during
    an outage waits for it, logging `database.unavailable` once and `database.reconnected` when it
    is back); any other error, a configuration error included, is raised at once."""
    outage = Outage(logger, retry_seconds)
    while True:
        try:
            result = fn()
        except Exception as exc:
            time.sleep(outage.failed(exc))
            continue
        outage.ended()
        return result


def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    name: str = "zart",
    keep_reconnecting: bool = False,
) -> ConnectionPool:
    """A pool of autocommit connections; fails fast with DatabaseUnavailable.

    psycopg_pool replaces a lost connection with attempts spaced by a doubling back-off (1, 2, 4,
    ... 128 s) for 5 minutes, so after an outage of a minute a pool may wait half a minute more
    before it tries again. A pool with `keep_reconnecting` (the worker's) instead gives up each
    attempt after about a second and starts a fresh one at once: it tries about once a second for
    as long as the outage lasts, and is serving again within about a second of the database's return.
    """
    extra: dict[str, Any] = {}
    if keep_reconnecting:
        _QuietReconnects.pools.add(name)
        extra = {"reconnect_timeout": _RECONNECT_SECONDS, "reconnect_failed": _reconnect_again}
    try:
        # Validate the URL (and reachability) with one direct connection: the pool alone would
        # only report a generic timeout.
        connect(url, timeout=5).close()
        pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, **_defaults(url)},
            configure=_configure,
            check=check_alive,
            name=name,
            open=False,
            **extra,
        )
        pool.open(wait=True, timeout=10)
    except PoolTimeout:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(url)}") from None
    return pool


def _reconnect_again(pool: ConnectionPool) -> None:
    """A connection attempt gave up: start another (check() grows the pool back to its size)."""
    if not pool.closed:
        pool.check()


class _QuietReconnects(logging.Filter):
    """Drops psycopg_pool's warning for every failed attempt of a `keep_reconnecting` pool (one a
    second during an outage); the worker logs the outage once instead (`database.unavailable`,
    `claim.failing`, `listen.lost`)."""

    pools: ClassVar[set[str]] = set()
    _messages = ("error connecting in", "reconnection attempt in pool")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith(self._messages)
            and isinstance(record.args, tuple)
            and bool(record.args)
            and record.args[0] in self.pools
        )


logging.getLogger("psycopg.pool").addFilter(_QuietReconnects())
