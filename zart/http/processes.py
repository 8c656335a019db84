"""The server's processes: one uvicorn server stopped by our signals (and, in a worker process, by
its parent's end), and `--workers N` as N forked processes serving one socket.

Fork rather than uvicorn's own multiprocess supervisor: its children are spawned (the app imported
again from a string, the settings passed across), keep both ends of its health-check pipe (so they
outlive a SIGKILLed parent) and its signal handling polls. Here the apps are imported and the
settings checked once, in the parent; each child watches a pipe only the parent can write to, so it
stops whenever the parent ends, however it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator

import uvicorn

from ..logs import log_event

log = logging.getLogger("zart.http")

# A stop's grace: requests in flight have this long to finish (as Hypercorn gave them), then are cut.
GRACEFUL_TIMEOUT = 3.0
# A worker process of `--workers N` gets this long after the grace to end, then is killed.
WORKER_EXIT_WAIT = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Server(uvicorn.Server):
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


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def _worker(config: uvicorn.Config, sock: socket.socket, parent: int) -> None:
    """A forked worker process: serve until stopped, then end here (never return into the parent's code)."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, signal.SIGCHLD))
        Server(config, parent).run(sockets=[sock])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve_workers(config: uvicorn.Config, sock: socket.socket, workers: int) -> int:
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
