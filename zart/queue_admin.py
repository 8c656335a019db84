"""Reading and changing queues at run time, for operators: `zart queues`, `zart queues set` and
`GET /v1/queues`.

The limits live in the `zart_queues` row, which the claim reads on every round (`sql.CLAIM_TASKS`):
a change here takes effect on every worker from its next claim, with no restart. A limit changed
here wins over the one declared in code (`zart.Queue`) until the queue is reset, so that a deploy or
a worker's restart does not undo an operator's decision in the middle of an incident.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from . import sql
from .db import resolve_url
from .errors import UnknownQueue
from .pools import transaction
from .queues import Rate, check_limit, check_queue_name, parse_rate


class _Unset(enum.Enum):
    UNSET = "UNSET"


# "Leave this limit as it is" (None means "no limit").
UNSET = _Unset.UNSET


@attrs.frozen
class QueueInfo:
    """A queue's limits and what waits and runs in it, as of one statement's snapshot.

    `rate` is "N/PERIOD" text (e.g. "100/1s") or None. `overridden`: the limits were set at run time
    and win over the ones declared in code. `ready`: executions due to begin, waiting for room;
    `delayed`: waiting for their `delay=`/`run_at=`; `in_progress`: begun and not ended (the slots
    taken, sleeps and event waits included); `oldest_ready_seconds`: how long the oldest ready one has
    been due (None when none is ready).
    """

    name: str
    concurrency: int | None
    per_key: int | None
    rate: str | None
    overridden: bool
    ready: int
    in_progress: int
    delayed: int
    oldest_ready_seconds: float | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> QueueInfo:
        """One row of sql.QUEUE_STATS."""
        name, concurrency, per_key, rate_limit, rate_period, overridden, ready, running, delayed, age = row
        rate = None if rate_limit is None else str(Rate(rate_limit, rate_period))
        return cls(name, concurrency, per_key, rate, overridden, ready, running, delayed, age)


def queue_stats(*, database_url: str | None = None) -> list[QueueInfo]:
    """Every queue with its limits and counts, by name: one statement on the queues' partial indexes."""
    url = resolve_url(database_url)
    with transaction(url) as conn:
        rows = conn.execute(sql.QUEUE_STATS, {"name": None}).fetchall()
    return [QueueInfo.from_row(row) for row in rows]


def set_queue(
    name: str,
    *,
    concurrency: int | _Unset | None = UNSET,
    per_key: int | _Unset | None = UNSET,
    rate: str | Rate | _Unset | None = UNSET,
    reset: bool = False,
    database_url: str | None = None,
) -> QueueInfo:
    """Change a queue's limits at run time; the queue as it is after the change.

    Each limit given replaces the current one (None removes it; limits not given stay as they are);
    `concurrency=0` holds the queue: nothing more of it begins until it is raised. The queue is created
    if it does not exist, so that starts may name it. Limits set here are `overridden`: workers that
    declare the queue in code no longer change them. Every worker applies them from its next claim.
    Lowering a limit stops nothing that is in progress: executions over the new limit finish, and no
    new one begins until the queue is under it.

    With no limit given, the queue is only created if missing. `reset=True` instead gives the queue
    back to the code: the limits declared with `zart.Queue` apply again when a worker that declares
    it next starts (until then the current limits stay). UnknownQueue if there is no such queue.
    """
    name = check_queue_name(name)
    given = {
        "concurrency": concurrency is not UNSET,
        "per_key": per_key is not UNSET,
        "rate": rate is not UNSET,
    }
    if reset and any(given.values()):
        raise ValueError(
            "give limits or reset=True, not both "
            "(a reset gives the queue back to the limits declared in code)"
        )
    values = {
        "concurrency": None
        if concurrency is UNSET
        else check_limit(concurrency, f"concurrency of queue {name!r}", 0),
        "per_key": None if per_key is UNSET else check_limit(per_key, f"per_key of queue {name!r}", 1),
    }
    parsed = None if rate is UNSET else parse_rate(rate, f"rate of queue {name!r}")
    url = resolve_url(database_url)
    with transaction(url) as conn:
        if reset:
            if conn.execute(sql.RESET_QUEUE, {"name": name}).fetchone() is None:
                raise _unknown(conn, name)
        elif any(given.values()):
            conn.execute(
                sql.SET_QUEUE_LIMITS,
                {
                    "name": name,
                    **values,
                    "rate_limit": parsed.limit if parsed else None,
                    "rate_period": parsed.period if parsed else None,
                    "set_concurrency": given["concurrency"],
                    "set_per_key": given["per_key"],
                    "set_rate": given["rate"],
                },
            )
        else:
            conn.execute(sql.CREATE_QUEUE, {"name": name})
        row = conn.execute(sql.QUEUE_STATS, {"name": name}).fetchone()
    assert row is not None  # created or found in this transaction
    return QueueInfo.from_row(row)


def _unknown(conn: Any, name: str) -> UnknownQueue:
    known = [row[0] for row in conn.execute(sql.SELECT_QUEUE_NAMES).fetchall()]
    return UnknownQueue(f"unknown queue {name!r}; known queues: {', '.join(repr(n) for n in known)}")
