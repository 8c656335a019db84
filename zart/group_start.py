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

The flusher is a `zart.batching.Batcher`: an async caller waits without a thread of its own.

Only single starts that need nothing read first are grouped (see `starting.groupable`). If PostgreSQL
refuses a group (not an outage), each of its starts is tried alone, so that one bad start cannot fail
the others; an outage fails the group's starts together, as it would have failed each.
"""

from __future__ import annotations

from typing import Any

from . import sql
from .batching import Batcher, PerProcess
from .db import is_transient
from .pools import shared_pool
from .starting import Plan, Started, outcome, statement_params

# At most this many executions in one group: a big backlog of callers is committed in several
# statements of bounded size rather than one huge one.
MAX_GROUP = 500


class StartGroup(Batcher[Plan, list[Started]]):
    """The flusher of one process and one database URL."""

    thread_name = "zart-start-group"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def start(self, plan: Plan) -> list[Started]:
        """Start and wait (a blocking caller)."""
        return self.call(plan)

    async def astart(self, plan: Plan) -> list[Started]:
        """Start and wait, under trio or asyncio, without a thread of the caller's."""
        return await self.acall(plan)

    def take(self, waiting: list[Plan]) -> int:
        """The oldest starts up to MAX_GROUP executions, each id at most once: a second start of an
        id in the group waits for the next one, so that it sees the first one's row."""
        ids: set[str] = set()
        size = 0
        for count, plan in enumerate(waiting):
            if (count and size + len(plan.ids) > MAX_GROUP) or ids.intersection(plan.ids):
                return count
            ids.update(plan.ids)
            size += len(plan.ids)
        return len(waiting)

    def handle(self, plans: list[Plan]) -> list[list[Started] | BaseException]:
        try:
            rows = self._execute(plans)
        except Exception as exc:
            if len(plans) == 1 or is_transient(exc):
                raise
            # PostgreSQL refused the group: find the start it refuses by trying each alone.
            return [self._alone(plan) for plan in plans]
        answers: list[list[Started] | BaseException] = []
        offset = 0
        for plan in plans:
            mine = rows[offset : offset + len(plan.ids)]
            offset += len(plan.ids)
            try:
                answers.append(outcome(plan, mine))
            except Exception as exc:  # DuplicateExecution: the id is another workflow's
                answers.append(exc)
        return answers

    def _alone(self, plan: Plan) -> list[Started] | BaseException:
        try:
            return outcome(plan, self._execute([plan]))
        except Exception as exc:
            return exc

    def _execute(self, plans: list[Plan]) -> list[tuple[Any, ...]]:
        # One statement (the inserts and the NOTIFY) is one transaction by itself: no BEGIN and
        # COMMIT round trips around it.
        with shared_pool(self.url).connection() as conn:
            return conn.execute(sql.START_EXECUTIONS, statement_params(plans)).fetchall()


_groups: PerProcess[StartGroup] = PerProcess(StartGroup)


def group_for(url: str) -> StartGroup:
    """This process's flusher for `url`."""
    return _groups.get(url)
