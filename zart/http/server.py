"""`zart serve`: the API on uvicorn (httptools on asyncio, uvloop when installed), one process or
several sharing one socket.

The socket is bound here, before uvicorn starts, so that a bad address or a port in use is a clear
configuration error and `--port 0` can log the port it got; SIGTERM and SIGINT stop the server.
A slow client is cut off: `protocol.HttpProtocol` bounds an idle connection and the wait for a request's
headers, `middleware.BodyDeadline` its body, both `--client-timeout`.

uvicorn rather than Hypercorn on trio: Hypercorn's HTTP/1.1 (h11, in pure Python) and its trio
plumbing took about 80% of the server's CPU per request. With httptools (a C parser) on uvloop, a
start through the API costs about a third of the server CPU it did, and one process serves about
2.5 times the starts per second (`python -m bench.http_starts`).

`--workers N` forks N processes that serve the one listening socket (`zart.http.processes`), after
the apps are imported and the settings checked; they end with the parent.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import uvicorn

from .. import db, schema
from ..durations import parse_duration
from ..errors import ConfigurationError
from ..logs import log_event
from .app import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_STATEMENT_TIMEOUT,
    Settings,
    create_app,
)
from .processes import GRACEFUL_TIMEOUT, Server, serve_workers
from .protocol import HttpProtocol

log = logging.getLogger("zart.http")

TOKEN_ENV = "ZART_API_TOKEN"

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
}


def parse_size(text: str | int, what: str = "--max-body-size") -> int:
    """Bytes from `1048576`, `64KiB`, `1MiB`, `2MB`, `1M` (K, M and G are binary)."""
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise ConfigurationError(
                f"invalid {what} {text!r}: give bytes, or a number with a unit: 512KiB, 1MiB, 2MB"
            )
        size = int(match.group(1)) * _UNITS[match.group(2) and match.group(2).lower()]
    if size < 1:
        raise ConfigurationError(f"invalid {what} {text!r}: it must be at least 1 byte")
    return size


def _seconds(value: str | float, option: str) -> float:
    try:
        return parse_duration(value, option)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _token_from_env() -> str | None:
    token = os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    if not token.strip():
        raise ConfigurationError(f"{TOKEN_ENV} is set but empty; unset it to serve without authentication")
    return token


# Connections the kernel queues for the server to accept.
BACKLOG = 2048
# uvloop when it is installed (a dependency where it builds), else asyncio's own loop: on the starts
# benchmark (bench/http_starts.py) uvloop serves a start in about a fifth less CPU.
LOOP = "auto"


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # connections queue from the moment `http.listening` is logged
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        http=HttpProtocol,
        loop=LOOP,
        ws="none",
        lifespan="on",
        interface="asgi3",
        log_config=None,  # logging is the command's (`zart.cli`), uvicorn's loggers propagate to it
        access_log=False,
        proxy_headers=False,  # no X-Forwarded-* taken on trust
        server_header=False,
        backlog=BACKLOG,
        # Also the deadline of a request's headers (`HttpProtocol`).
        timeout_keep_alive=settings.client_timeout,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
    )


def serve(
    *,
    database_url: str | None,
    apps: tuple[str, ...] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    max_body_size: str | int = DEFAULT_MAX_BODY_SIZE,
    lock_timeout: str | float = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str | float = DEFAULT_STATEMENT_TIMEOUT,
    client_timeout: str | float = DEFAULT_CLIENT_TIMEOUT,
) -> int:
    """Serve the API until SIGTERM or SIGINT; the exit code. The caller imported `apps` already."""
    if workers < 1:
        raise ConfigurationError(f"--workers must be at least 1, not {workers}")
    settings = Settings(
        db.resolve_url(database_url),
        _token_from_env(),
        parse_size(max_body_size),
        apps,
        _seconds(lock_timeout, "--lock-timeout"),
        _seconds(statement_timeout, "--statement-timeout"),
        _seconds(client_timeout, "--client-timeout"),
    )
    # Started during an outage or a failover, it waits for the database (logging the outage once),
    # as `zart supervise` does: a crash instead would put it in its process manager's back-off.
    db.call_when_reachable(lambda: schema.migrate(settings.database_url), log)
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    log_event(
        log,
        "http.listening",
        url=f"http://{shown_host}:{bound_port}",
        workers=workers,
        authentication="on" if settings.token else "off",
        max_body_size=settings.max_body_size,
        lock_timeout=f"{settings.lock_timeout:g}s",
        statement_timeout=f"{settings.statement_timeout:g}s",
        client_timeout=f"{settings.client_timeout:g}s",
    )
    try:
        config = _config(settings)
        if workers == 1:
            Server(config).run(sockets=[sock])
            return 0
        return serve_workers(config, sock, workers)
    finally:
        sock.close()
        log_event(log, "http.stopped")
