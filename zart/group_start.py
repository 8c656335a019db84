"""Group commit for starts: the `zart.start`/`astart` calls of one process share transactions.

A start is one statement; what it costs is its commit (a WAL flush) and a pooled connection for the
length of a round trip. Many callers starting at once (a web server's requests, 64 asyncio tasks, a
pool of threads) would each wait for one of the pool's connections and commit alone, so starts per
second would be bounded by the pool's size over a commit's latency. Instead, each process has one
flusher thread per database: callers hand it their checked start (`starting.Plan`) and wait; it takes
every start waiting, runs them as ONE `sql.START_EXECUTIONS` (the statement takes one row per
execution, of any workflow and options) in ONE transaction, and answers each caller with its own
rows. Starts that arrive while it commits form the next group, as the worker's completer does for
checkpoints. A lone start pays one thread hand-off (tens of microseconds) and nothing else.

An async caller waits without a thread of its own (a trio event or an asyncio future, set from the
flusher), so 64 tasks cost 64 entries in a list, not 64 threads.

Only single starts that need nothing read first are grouped (see `starting.groupable`). If PostgreSQL
refuses a group (not an outage), each of its starts is tried alone, so that one bad start cannot fail
the others; an outage fails the group's starts together, as it would have failed each.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

import sniffio

from . import sql
from .db import is_transient
from .pools import transaction
from .starting import Plan, Started, outcome, statement_params

# At most this many executions in one group: a big backlog of callers is committed in several
# statements of bounded size rather than one huge one.
MAX_GROUP = 500

Outcome = list[Started] | BaseException
Answer = Callable[[Outcome], None]


class StartGroup:
    """The flusher of one process and one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Condition(threading.Lock())
        self._waiting: list[tuple[Plan, Answer]] = []
        self._thread = threading.Thread(target=self._run, name="zart-start-group", daemon=True)
        self._thread.start()
        self.commits = 0  # how many transactions the flusher ran (tests and benchmarks read it)

    # -- callers ----------------------------------------------------------------------------------

    def submit(self, plan: Plan, answer: Answer) -> None:
        """Queue a start; `answer` is called from the flusher thread with its rows or its error."""
        with self._lock:
            self._waiting.append((plan, answer))
            self._lock.notify()

    def start(self, plan: Plan) -> list[Started]:
        """Start and wait (a blocking caller)."""
        done = threading.Event()
        box: list[Outcome] = []

        def answer(result: Outcome) -> None:
            box.append(result)
            done.set()

        self.submit(plan, answer)
        done.wait()
        return _unbox(box[0])

    async def astart(self, plan: Plan) -> list[Started]:
        """Start and wait, under trio or asyncio, without a thread of the caller's."""
        if sniffio.current_async_library() == "trio":
            return await self._astart_trio(plan)
        return await self._astart_asyncio(plan)

    async def _astart_trio(self, plan: Plan) -> list[Started]:
        import trio

        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[Outcome] = []

        def answer(result: Outcome) -> None:
            box.append(result)
            with contextlib.suppress(trio.RunFinishedError):  # the caller's loop has ended
                token.run_sync_soon(done.set)

        self.submit(plan, answer)
        await done.wait()
        return _unbox(box[0])

    async def _astart_asyncio(self, plan: Plan) -> list[Started]:
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()

        def settle(result: Outcome) -> None:
            if not future.done():  # the caller was cancelled meanwhile
                future.set_result(result)

        def answer(result: Outcome) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(settle, result)

        self.submit(plan, answer)
        return _unbox(await future)

    # -- the flusher ------------------------------------------------------------------------------

    def _take(self) -> list[tuple[Plan, Answer]]:
        """The next group: the oldest waiting starts, each id at most once (a second start of an id
        that is in this group waits for the next one, so that it sees the first one's row)."""
        with self._lock:
            while not self._waiting:
                self._lock.wait()
            group: list[tuple[Plan, Answer]] = []
            rest: list[tuple[Plan, Answer]] = []
            ids: set[str] = set()
            size = 0
            for item in self._waiting:
                plan = item[0]
                if (group and size + len(plan.ids) > MAX_GROUP) or ids.intersection(plan.ids):
                    rest.append(item)
                    continue
                group.append(item)
                ids.update(plan.ids)
                size += len(plan.ids)
            self._waiting = rest
            return group

    def _run(self) -> None:
        while True:
            group = self._take()
            try:
                answers = self._commit(group)
            except BaseException as exc:  # every caller must hear of it; the flusher goes on
                answers = [exc] * len(group)
            for (_, answer), result in zip(group, answers, strict=True):
                answer(result)

    def _commit(self, group: list[tuple[Plan, Answer]]) -> list[Outcome]:
        plans = [plan for plan, _ in group]
        try:
            rows = self._execute(plans)
        except Exception as exc:
            if len(plans) == 1 or is_transient(exc):
                raise
            # PostgreSQL refused the group: find the start it refuses by trying each alone.
            return [self._alone(plan) for plan in plans]
        answers: list[Outcome] = []
        offset = 0
        for plan in plans:
            mine = rows[offset : offset + len(plan.ids)]
            offset += len(plan.ids)
            try:
                answers.append(outcome(plan, mine))
            except Exception as exc:  # DuplicateExecution: the id is another workflow's
                answers.append(exc)
        return answers

    def _alone(self, plan: Plan) -> Outcome:
        try:
            return outcome(plan, self._execute([plan]))
        except Exception as exc:
            return exc

    def _execute(self, plans: list[Plan]) -> list[tuple[Any, ...]]:
        with transaction(self.url) as conn:
            rows = conn.execute(sql.START_EXECUTIONS, statement_params(plans)).fetchall()
        self.commits += 1
        return rows


def _unbox(result: Outcome) -> list[Started]:
    if isinstance(result, BaseException):
        raise result
    return result


_groups: dict[tuple[int, str], StartGroup] = {}
_groups_lock = threading.Lock()


def group_for(url: str) -> StartGroup:
    """This process's flusher for `url` (one per process: a thread does not survive a fork)."""
    key = (os.getpid(), url)
    group = _groups.get(key)
    if group is None:
        with _groups_lock:
            group = _groups.get(key)
            if group is None:
                group = _groups[key] = StartGroup(url)
    return group
