"""Waiting for executions to end: one LISTEN connection per process and database, shared by every
`result()` / `aresult()` call of that process.

An execution's final transaction sends a notification on `zart_done` (sql.NOTIFY_FINISHED, in the
completer's batch and in `zart.cancel`), delivered with its commit. Its payload is the execution's id
and, when they fit, its final status, result and error: the waiter returns the result without a read
of its own (a round trip saved at the end of every wait). A waiter registers its execution id
*before* it reads the status, so a notification cannot fall between the read and the wait.
Notifications are hints: a waiter still reads the status once a second, so a lost connection or a
missed notification costs at most a second, never a hang.

The same connection listens on `zart_stream` for the stream readers (`zart.streams`): a commit that
appends values to an execution's stream notifies `[execution id, stream]`, and wakes the readers of
that execution (`watch(..., streams=True)`), which the execution's end wakes too. Result waiters are
not woken by values.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import orjson
import psycopg
import sniffio

from . import sql
from .db import connect
from .errors import ConfigurationError, ZartError
from .threads import in_thread

log = logging.getLogger("zart.waiting")

# How long a waiter trusts the notifications alone before it reads the status again.
FALLBACK_SECONDS = 1.0
_READY_SECONDS = 2.0


# (status, result, error): an execution's end as stored, its result and error as JSON texts.
Outcome = tuple[str, str | None, str | None]


class Signal(Protocol):
    """What the listener sets: an Ended, or an AsyncSignal."""

    outcome: Outcome | None

    def set(self) -> None: ...


class Ended(threading.Event):
    """A blocking waiter's wake-up, with the outcome the notification carried (None if it did not
    fit in it, or if the wake-up is a lost connection's: then the waiter reads the status)."""

    def __init__(self) -> None:
        super().__init__()
        self.outcome: Outcome | None = None


def parse_done(payload: str) -> tuple[str, Outcome | None]:
    """A `zart_done` payload: the execution id, and its outcome when the payload holds it.

    A payload that is not a JSON array is a bare execution id (an engine from before outcomes were
    sent along): its waiters read the status themselves.
    """
    if payload.startswith("["):
        try:
            items = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload, None
        if isinstance(items, list) and items and isinstance(items[0], str):
            if len(items) == 4 and isinstance(items[1], str):
                return items[0], (items[1], items[2], items[3])
            return items[0], None
    return payload, None


class AsyncSignal:
    """A waiter's wake-up in async code (trio or asyncio): set from the listener's thread, awaited in
    the caller's loop, so that `aresult()` holds no thread while it waits."""

    def __init__(self) -> None:
        self._trio = sniffio.current_async_library() == "trio"
        if self._trio:
            import trio

            self._token: Any = trio.lowlevel.current_trio_token()
            self._new_event: Callable[[], Any] = trio.Event
        else:
            import asyncio

            self._loop = asyncio.get_running_loop()
            self._new_event = asyncio.Event
        self._event = self._new_event()
        self.outcome: Outcome | None = None

    def clear(self) -> None:
        if self._event.is_set():
            self._event = self._new_event()

    def set(self) -> None:
        """Called from the listener's thread."""
        event = self._event
        with contextlib.suppress(RuntimeError):  # the caller's loop has ended (trio's RunFinishedError too)
            if self._trio:
                self._token.run_sync_soon(event.set)
            else:
                self._loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        """Until set, or `timeout` seconds."""
        if self._trio:
            import trio

            with trio.move_on_after(timeout):
                await self._event.wait()
        else:
            import asyncio

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)


class _Listener:
    """One thread with one connection listening on sql.DONE_CHANNEL for `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.listening = threading.Event()
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Signal]] = {}
        self._readers: dict[str, set[Signal]] = {}  # stream readers, by execution id
        thread = threading.Thread(target=self._run, name="zart-done-listener", daemon=True)
        thread.start()

    def add(self, execution_id: str, event: Signal, streams: bool = False) -> None:
        with self._lock:
            (self._readers if streams else self._waiters).setdefault(execution_id, set()).add(event)

    def remove(self, execution_id: str, event: Signal, streams: bool = False) -> None:
        waiters = self._readers if streams else self._waiters
        with self._lock:
            events = waiters.get(execution_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del waiters[execution_id]

    def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                with connect(self.url) as conn:
                    conn.execute(f"LISTEN {sql.STREAM_CHANNEL}")
                    conn.execute(f"LISTEN {sql.DONE_CHANNEL}")  # last: pg_stat_activity shows it
                    self.listening.set()
                    delay = 0.1
                    while True:
                        for notice in conn.notifies(timeout=FALLBACK_SECONDS):
                            if notice.channel == sql.STREAM_CHANNEL:
                                self._wake_readers(notice.payload)
                            else:
                                self._wake(notice.payload)
            except ConfigurationError as exc:
                # The database is gone (dropped) or refuses us: no point in listening any more.
                # Waiters read the status themselves; a later wait starts a new listener.
                log.debug("the done listener stops: %s", exc)
                self.listening.clear()
                _forget(self)
                self._wake_all()
                return
            except (psycopg.Error, OSError, ZartError) as exc:
                self.listening.clear()
                log.debug("the done listener lost its connection: %s", exc)
                self._wake_all()  # let waiters read the status themselves meanwhile
                time.sleep(delay)
                delay = min(delay * 2, FALLBACK_SECONDS)

    def _wake_readers(self, payload: str) -> None:
        try:
            execution_id = orjson.loads(payload)[0]
        except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
            return
        with self._lock:
            events = list(self._readers.get(execution_id, ()))
        for event in events:
            event.set()

    def _wake(self, payload: str) -> None:
        execution_id, outcome = parse_done(payload)
        with self._lock:
            events = list(self._waiters.get(execution_id, ())) + list(self._readers.get(execution_id, ()))
        for event in events:
            if outcome is not None:
                event.outcome = outcome  # before set(): the waiter reads it once woken
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [
                event for waiters in (self._waiters, self._readers) for e in waiters.values() for event in e
            ]
        for event in events:
            event.set()


_listeners: dict[tuple[int, str], _Listener] = {}
_listeners_lock = threading.Lock()


def _forget(listener: _Listener) -> None:
    with _listeners_lock:
        key = (os.getpid(), listener.url)
        if _listeners.get(key) is listener:
            del _listeners[key]


def _listener(url: str) -> _Listener:
    key = (os.getpid(), url)  # a listener does not survive a fork
    with _listeners_lock:
        listener = _listeners.get(key)
        if listener is None:
            listener = _listeners[key] = _Listener(url)
    return listener


@contextlib.contextmanager
def watch(url: str, execution_id: str, streams: bool = False) -> Iterator[Ended]:
    """An event set when `execution_id` may have ended (registered before the caller reads its status);
    with `streams`, also when values were appended to one of its streams."""
    listener = _listener(url)
    event = Ended()
    listener.add(execution_id, event, streams)
    try:
        listener.listening.wait(_READY_SECONDS)  # the first wait of a process: until LISTEN is on
        yield event
    finally:
        listener.remove(execution_id, event, streams)


@contextlib.asynccontextmanager
async def awatch(url: str, execution_id: str, streams: bool = False) -> AsyncIterator[AsyncSignal]:
    """`watch` for async code: the signal is awaited in the caller's loop, no thread is held."""
    listener = _listener(url)
    signal = AsyncSignal()
    listener.add(execution_id, signal, streams)
    try:
        if not listener.listening.is_set():  # the first wait of a process: until LISTEN is on
            await in_thread(listener.listening.wait, _READY_SECONDS)
        yield signal
    finally:
        listener.remove(execution_id, signal, streams)
