"""One thread that serves many callers a batch at a time: the shape of Zart's client-side grouping.

Starts (zart.group_start) and result reads (zart.waiting) from many callers of one process at once
would each take a pooled connection and a round trip (and for a start, a commit of its own). A
`Batcher` has one thread per purpose and database: callers queue an item and wait; the thread takes
every item waiting (or the subset `take` picks), handles them with one statement, and answers each
caller with its own outcome. Items that arrive meanwhile form the next batch, so a burst costs a
few round trips and a lone call costs a thread hand-off (tens of microseconds).

A blocking caller that finds no batch under way handles the batch itself, in its own thread (the
leader of a group commit): a lone caller then pays no hand-off at all, and callers that arrive
meanwhile wait for the next batch, which the leader or the thread handles. Async callers (trio or
asyncio) never lead: they wait on an event of their own loop set from the thread, so that 64
concurrent tasks hold no thread each.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import sniffio

Item = TypeVar("Item")
Result = TypeVar("Result")
Made = TypeVar("Made")

Answer = Callable[[Any], None]  # called with a result or the exception to raise


class Batcher(Generic[Item, Result]):
    """Subclasses define `handle(items) -> outcomes` (one per item: a result or an exception) and
    may narrow `take(waiting) -> (batch, rest)`."""

    thread_name = "zart-batcher"

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._waiting: list[tuple[Item, Answer]] = []
        self._leading = False  # a batch is being handled (by the thread or a blocking caller)
        self.batches = 0  # how many batches the thread handled (tests and benchmarks read it)
        threading.Thread(target=self._run, name=self.thread_name, daemon=True).start()

    # -- what a subclass defines ------------------------------------------------------------------

    def handle(self, items: list[Item]) -> list[Result | BaseException]:
        raise NotImplementedError

    def take(self, waiting: list[Item]) -> int:
        """How many of the oldest waiting items form the next batch (all, by default)."""
        return len(waiting)

    # -- callers ----------------------------------------------------------------------------------

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def submit(self, item: Item, answer: Answer) -> None:
        """Queue `item`; `answer` is called from the batcher's thread with its outcome."""
        with self._lock:
            self._waiting.append((item, answer))
            self._lock.notify()

    def call(self, item: Item) -> Result:
        """Queue `item` and wait for its outcome (a blocking caller); with no batch under way, handle
        the batches in this thread until its own item is answered."""
        done = threading.Event()
        box: list[Any] = []

        def answer(outcome: Any) -> None:
            box.append(outcome)
            done.set()

        with self._lock:
            self._waiting.append((item, answer))
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._lock.notify()
        if lead:
            try:
                while not done.is_set():
                    self._handle(self._take_locked())
            finally:
                with self._lock:
                    self._leading = False
                    if self._waiting:
                        self._lock.notify()  # what arrived meanwhile: the thread takes it
        done.wait()
        return _unbox(box[0])

    async def acall(self, item: Item) -> Result:
        """The same under trio or asyncio, without a thread of the caller's."""
        if sniffio.current_async_library() == "trio":
            import trio

            token = trio.lowlevel.current_trio_token()
            finished = trio.Event()
            box: list[Any] = []

            def answer(outcome: Any) -> None:
                box.append(outcome)
                with contextlib.suppress(trio.RunFinishedError):  # the caller's loop has ended
                    token.run_sync_soon(finished.set)

            self.submit(item, answer)
            await finished.wait()
            return _unbox(box[0])
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(outcome: Any) -> None:
            if not future.done():  # the caller was cancelled meanwhile
                future.set_result(outcome)

        def answer_asyncio(outcome: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(settle, outcome)

        self.submit(item, answer_asyncio)
        return _unbox(await future)

    # -- the thread -------------------------------------------------------------------------------

    def _take_locked(self) -> list[tuple[Item, Answer]]:
        """The next batch (the caller leads: nobody else takes meanwhile)."""
        with self._lock:
            count = max(1, self.take([item for item, _ in self._waiting]))
            batch, self._waiting = self._waiting[:count], self._waiting[count:]
            return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting or self._leading:
                    self._lock.wait()
                self._leading = True
            try:
                self._handle(self._take_locked())
            finally:
                with self._lock:
                    self._leading = False

    def _handle(self, batch: list[tuple[Item, Answer]]) -> None:
        try:
            outcomes: list[Any] = list(self.handle([item for item, _ in batch]))
        except BaseException as exc:  # every caller must hear of it; the thread goes on
            outcomes = [exc] * len(batch)
        self.batches += 1
        for (_, answer), outcome in zip(batch, outcomes, strict=True):
            answer(outcome)


def _unbox(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class PerProcess(Generic[Made]):
    """One `factory(url)` per process and database URL: a batcher's thread does not survive a fork,
    so a forked child makes its own on first use."""

    def __init__(self, factory: Callable[[str], Made]) -> None:
        self._factory = factory
        self._made: dict[tuple[int, str], Made] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> Made:
        key = (os.getpid(), url)
        made = self._made.get(key)
        if made is None:
            with self._lock:
                made = self._made.get(key)
                if made is None:
                    made = self._made[key] = self._factory(url)
        return made
