"""`zart serve`: the API on uvicorn (httptools on asyncio, uvloop when installed), one process or
several sharing one socket.

The socket is bound here, before uvicorn starts, so that a bad address or a port in use is a clear
configuration error and `--port 0` can log the port it got; SIGTERM and SIGINT stop the server.
A slow client is cut off: `HttpProtocol` bounds an idle connection and the wait for a request's
headers, `middleware.BodyDeadline` its body, both `--client-timeout`.

uvicorn rather than Hypercorn on trio: Hypercorn's HTTP/1.1 (h11, in pure Python) and its trio
plumbing took about 80% of the server's CPU per request. With httptools (a C parser) on uvloop, a
start through the API costs about a third of the server CPU it did, and one process serves about
2.5 times the starts per second (`python -m bench.http_starts`).

`--workers N` forks N processes that serve the one listening socket, after the apps are imported and
the settings checked: each child runs its own event loop and uvicorn server, and ends with its parent
(a pipe only the parent holds the write end of reads as closed when the parent is gone, however it
ended). The parent waits: SIGTERM or SIGINT stops every child; a child that ends on its own stops
the others and the server, with an error, for whatever supervises it to restart the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

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


# Connections the kernel queues for the server to accept.
BACKLOG = 2048
# Longest request line and headers, as h11 (under Hypercorn) allowed: 431 beyond.
MAX_HEAD_SIZE = 16 * 1024
# A stop's grace: requests in flight have this long to finish (as Hypercorn gave them), then are cut.
GRACEFUL_TIMEOUT = 3.0
# A worker process of `--workers N` gets this long after the grace to end, then is killed.
WORKER_EXIT_WAIT = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, made fit for a public API.

    - A deadline for a request's headers. uvicorn's keep-alive timeout closes a connection left idle
      after a response, but not one that never sends a request, nor one that trickles a request's
      headers a byte at a time (any byte received disarms it). Here a deadline runs from the
      connection's start, and from the end of each response, until the next request's headers are
      complete; past it the connection is closed. Its length is the keep-alive timeout,
      `--client-timeout`. The body has its own deadline (`middleware.BodyDeadline`).
    - A bound on a request's line and headers, `MAX_HEAD_SIZE` bytes, as h11 had (431): httptools
      keeps a header that has not ended in memory, however long.
    - An upgrade offer is declined (RFC 9110 §7.8): curl --http2, Java's HttpClient and others send
      `Connection: Upgrade` with `Upgrade: h2c` on ordinary requests. httptools stops parsing at such
      a request's headers, so uvicorn would serve it with an empty body (uvicorn issue #2722). Here
      the request is parsed again without its `Upgrade` header, and served as HTTP/1.1.
    - A request httptools cannot parse is answered in the API's error shape (400 `bad_request`)
      rather than uvicorn's plain text, and the connection closed.
    """

    _headers_due: asyncio.TimerHandle | None = None
    _in_head = False  # a request's line and headers have begun and are not complete
    _head_size = 0  # bytes of them received so far (counted a read at a time)
    _ended = False  # a request ended in the read being parsed
    _declining = False  # the request offered an upgrade: it is parsed again without the offer

    # -- the deadline ------------------------------------------------------------------------------

    def _wait_for_headers(self) -> None:
        self._headers_due = self.loop.call_later(self.timeout_keep_alive, self._headers_late)

    def _headers_late(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            self.transport.close()

    def _headers_arrived(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request, its headers complete, starts now
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._headers_arrived()
            self._wait_for_headers()

    # -- parsing -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the bound on a request's head, an upgrade declined, errors as JSON."""
        self._unset_keepalive_if_required()
        in_head = self._in_head
        self._ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._decline_upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, "bad_request", f"malformed HTTP/1.1 request: {exc}")
            return
        # Every byte of this read belongs to a head that is not complete, unless a request began
        # here after another one ended (the end of its body, not counted).
        if self._in_head and (in_head or not self._ended):
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_SIZE:
                self._refuse(
                    431,
                    "headers_too_large",
                    f"the request line and headers are larger than {MAX_HEAD_SIZE} bytes",
                )

    def on_message_begin(self) -> None:
        self._in_head, self._head_size = True, 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._headers_arrived()
        if self.parser.should_upgrade() and self.parser.get_method() != b"CONNECT":
            self._declining = True  # no request cycle: `_decline_upgrade` parses it again
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._declining:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._ended = True
        if not self._declining:
            super().on_message_complete()

    def _decline_upgrade(self, rest: bytes) -> None:
        """Parse the request again, without its `Upgrade` header, on a fresh parser, then `rest`
        (what followed its headers: its body, and maybe more requests). A CONNECT, which httptools
        takes as an upgrade too, is served as uvicorn does (no endpoint takes it)."""
        if not self._declining:
            return
        self._declining = False
        version = self.parser.get_http_version()
        lines = [b"%s %s HTTP/%s" % (self.parser.get_method(), self.url, version.encode())]
        lines += [name + b": " + value for name, value in self.headers if name != b"upgrade"]
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # as uvicorn sets its parser (httptools >= 0.6.3)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.data_received(b"\r\n".join(lines) + b"\r\n\r\n" + rest)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` with the API's error body, and close the connection."""
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": {"code": code, "message": message}})
        head = [STATUS_LINE[status]]
        head += [b"%s: %s\r\n" % header for header in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGTERM or SIGINT (a second SIGINT cuts the grace short), or, in
    a worker process of `--workers N`, by the end of its parent (`parent`: the pipe's read end).

    uvicorn's own signal handling raises the signal again once the server has stopped, which would
    end the process by that signal rather than with status 0.
    """

    def __init__(self, config: uvicorn.Config, parent: int | None = None) -> None:
        super().__init__(config)
        self.parent = parent

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._stop, signum)
        if self.parent is not None:
            loop.add_reader(self.parent, self._parent_gone)
        try:
            yield
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
            if self.parent is not None:
                loop.remove_reader(self.parent)

    def _stop(self, signum: int) -> None:
        if self.should_exit:
            self.force_exit = self.force_exit or signum == signal.SIGINT
            return
        if self.parent is None:  # a worker process: its parent logs the stop
            log_event(log, "http.stopping", signal=signal.Signals(signum).name)
        self.should_exit = True

    def _parent_gone(self) -> None:
        assert self.parent is not None
        asyncio.get_running_loop().remove_reader(self.parent)
        if not self.should_exit:
            log_event(log, "http.stopping", reason="the parent process ended", pid=os.getpid())
            self.should_exit = True


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


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def _worker(config: uvicorn.Config, sock: socket.socket, parent: int) -> None:
    """A forked worker process: serve until stopped, then end here (never return into the parent's code)."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, signal.SIGCHLD))
        _Server(config, parent).run(sockets=[sock])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve_workers(config: uvicorn.Config, sock: socket.socket, workers: int) -> int:
    """Fork `workers` processes serving `sock`; wait for a stop signal or a worker's end; stop them."""
    waited = {*STOP_SIGNALS, signal.SIGCHLD}
    # A handler, so that SIGCHLD is not discarded while blocked; blocked, so that `sigwait` takes them.
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    read_end, write_end = os.pipe()
    children: dict[int, int | None] = {}  # pid: exit code, once it ended
    code = 0
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                _worker(config, sock, read_end)
            children[pid] = None
        os.close(read_end)
        while True:
            signum = signal.sigwait(waited)
            if signum != signal.SIGCHLD:
                log_event(log, "http.stopping", signal=signal.Signals(signum).name)
                break
            if _reap(children):
                for pid, ended in children.items():
                    if ended is not None:
                        log_event(log, "http.worker_ended", logging.ERROR, pid=pid, exit_code=ended)
                code = 1
                break
        for pid, ended in children.items():
            if ended is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_TIMEOUT + WORKER_EXIT_WAIT
        while _reap(children) < len(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, ended in children.items():
            if ended is None:
                log_event(log, "http.worker_killed", logging.ERROR, pid=pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = 1
            elif ended != 0:
                code = 1
        return code
    finally:
        os.close(write_end)  # a worker still running (the parent failed) stops with it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)
        signal.signal(signal.SIGCHLD, previous)


def _reap(children: dict[int, int | None]) -> int:
    """Record the exit code of every child that ended; how many have ended."""
    for pid, ended in children.items():
        if ended is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children[pid] = _exit_code(status)
    return sum(ended is not None for ended in children.values())


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
    try:
        config = _config(settings)
        if workers == 1:
            _Server(config).run(sockets=[sock])
            return 0
        return _serve_workers(config, sock, workers)
    finally:
        sock.close()
        log_event(log, "http.stopped")
