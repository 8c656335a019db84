"""`zart serve`: the API on Hypercorn's trio worker, one process or several sharing one socket.

The socket is bound here, before Hypercorn starts, so that a bad address or a port in use is a clear
configuration error and `--port 0` can log the port it got; SIGTERM and SIGINT stop the server.
A slow client is cut off: Hypercorn's keep-alive timeout bounds an idle connection and a request's
headers, `middleware.BodyDeadline` its body, both `--client-timeout`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import socket

import orjson
import trio

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
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log_event(log, "http.stopping", signal=signal.Signals(signum).name)
            return


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
    from hypercorn.config import Config

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
    schema.migrate(settings.database_url)
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
    config = Config()
    # Closes a connection idle that long, between requests or before a request's headers are complete.
    config.keep_alive_timeout = settings.client_timeout
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's socket owns the descriptor from here on
    config.worker_class = "trio"
    config.workers = workers
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    try:
        if workers == 1:
            from hypercorn.trio import serve as hypercorn_serve

            app = create_app(settings)
            trio.run(functools.partial(hypercorn_serve, app, config, shutdown_trigger=_until_signal))
            return 0
        from hypercorn.run import run

        encoded = orjson.dumps(
            {
                "database_url": settings.database_url,
                "token": settings.token,
                "max_body_size": settings.max_body_size,
                "apps": list(settings.apps),
                "lock_timeout": settings.lock_timeout,
                "statement_timeout": settings.statement_timeout,
                "client_timeout": settings.client_timeout,
                "log_level": logging.getLevelName(logging.getLogger().level),
            }
        ).hex()
        config.application_path = f"zart.http.app:spawned_app('{encoded}')"
        return run(config)
    finally:
        log_event(log, "http.stopped")
