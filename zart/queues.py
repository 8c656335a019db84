"""`zart.Queue`: a queue's limits as declared in code, and the rules every caller checks them by.

A queue's limits are enforced by the claim in PostgreSQL (see `sql.CLAIM_TASKS`), never in one
process's memory; this module only declares and validates them. Workers register the queues their
workflows declare (`sql.REGISTER_QUEUES`); `zart queues set` changes them at run time.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import attrs

from .durations import parse_duration
from .names import check_name

DEFAULT = "default"
MAX_QUEUE_NAME_LENGTH = 200
MAX_KEY_LENGTH = 255
# Postgres `integer`: priorities and limits live in int4 columns.
_INT4 = 2**31 - 1

_declared: dict[str, Queue] = {}

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")
RATE_GRAMMAR = "a rate is 'N/PERIOD' with N >= 1 and PERIOD a duration, e.g. '100/1s', '10/1m', '5/250ms'"


@attrs.frozen
class Rate:
    """At most `limit` executions begin in any window of `period` seconds."""

    limit: int
    period: float

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


def parse_rate(value: Any, where: str = "rate") -> Rate | None:
    """'N/PERIOD' (or a Rate, or None) -> Rate; anything else fails with the grammar."""
    if value is None or isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid {where} {value!r}: {RATE_GRAMMAR}")
    match = _RATE.match(value)
    if match is None:
        raise ValueError(f"invalid {where} {value!r}: {RATE_GRAMMAR}")
    limit = int(match.group(1))
    if limit < 1 or limit > _INT4:
        raise ValueError(f"invalid {where} {value!r}: N must be between 1 and {_INT4}; {RATE_GRAMMAR}")
    try:
        period = parse_duration(match.group(2), where)
    except ValueError:
        raise ValueError(f"invalid {where} {value!r}: {RATE_GRAMMAR}") from None
    if period <= 0:
        raise ValueError(f"invalid {where} {value!r}: the period must be positive; {RATE_GRAMMAR}")
    return Rate(limit, period)


def check_limit(value: Any, what: str, minimum: int) -> int | None:
    """A limit is None (no limit) or a whole number >= minimum."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a whole number or None, not {type(value).__name__} {value!r}")
    if value < minimum or value > _INT4:
        raise ValueError(f"{what} must be between {minimum} and {_INT4}, got {value}")
    return value


def check_priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            "priority must be a whole number (lower begins first, default 0), "
            f"not {type(value).__name__} {value!r}"
        )
    if not -_INT4 <= value <= _INT4:
        raise ValueError(f"priority must be between {-_INT4} and {_INT4}, got {value}")
    return value


def check_key(value: Any) -> str | None:
    if value is None:
        return None
    return check_name(value, "queue key", MAX_KEY_LENGTH)


def check_queue_name(value: Any) -> str:
    return check_name(value, "queue name", MAX_QUEUE_NAME_LENGTH)


_ZERO = re.compile(r"^\s*0+(\.0*)?\s*(ms|s|m|h|d)?\s*$")


def _is_zero(delay: Any) -> bool:
    if isinstance(delay, timedelta):
        return delay == timedelta(0)
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        return delay == 0
    return isinstance(delay, str) and _ZERO.match(delay) is not None


def parse_delay(value: Any, what: str = "delay") -> float:
    """Seconds in a start's delay: a duration as everywhere, or zero (begin now)."""
    if _is_zero(value):
        return 0.0  # a computed delay that came out as nothing: begin now
    return parse_duration(value, what)


def start_delay(delay: Any, run_at: Any) -> tuple[float | None, datetime | None]:
    """`delay=` (a duration) or `run_at=` (an aware datetime), checked; at most one of them."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay= or run_at=, not both")
    if delay is not None:
        return parse_delay(delay), None
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise TypeError(f"run_at must be a datetime, not {type(run_at).__name__} {run_at!r}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValueError(
                f"run_at must be timezone-aware (e.g. datetime.now(timezone.utc) + ...), got {run_at!r}"
            )
        return None, run_at
    return None, None


@attrs.frozen
class Limits:
    concurrency: int | None
    per_key: int | None
    rate: Rate | None


@attrs.frozen(init=False)
class Queue:
    """A named queue and its limits, which hold across every worker process and machine.

    concurrency: at most N executions of the queue in progress at once (from the first step to the
    end, sleeps and waits included). per_key: at most N in progress per `key=`. rate: at most N
    executions begin per period, e.g. "100/1s". A Queue declared twice with the same name must have
    the same limits.
    """

    name: str
    concurrency: int | None
    per_key: int | None
    rate: Rate | None

    def __init__(
        self, name: str, concurrency: int | None = None, per_key: int | None = None, rate: Any = None
    ) -> None:
        name = check_queue_name(name)
        attrs_init = self.__attrs_init__  # type: ignore[attr-defined]
        attrs_init(
            name,
            check_limit(concurrency, f"concurrency of queue {name!r}", 0),
            check_limit(per_key, f"per_key of queue {name!r}", 1),
            parse_rate(rate, f"rate of queue {name!r}"),
        )
        existing = _declared.get(name)
        if existing is not None and existing != self:
            raise ValueError(f"queue {name!r} is already declared with other limits: {existing!r}")
        _declared[name] = self


def resolve(queue: Any) -> str | None:
    """A `queue=` argument (a Queue or its name) -> the name; None stays None."""
    if queue is None:
        return None
    if isinstance(queue, Queue):
        return queue.name
    return check_queue_name(queue)


def declared(name: str) -> Queue | None:
    return _declared.get(name)


def declared_queues() -> list[Queue]:
    return [_declared[name] for name in sorted(_declared)]


def registration(queues: list[Queue]) -> dict[str, list[Any]]:
    """The arrays of sql.REGISTER_QUEUES for these queues."""
    return {
        "names": [q.name for q in queues],
        "concurrencies": [q.concurrency for q in queues],
        "per_keys": [q.per_key for q in queues],
        "rate_limits": [q.rate.limit if q.rate else None for q in queues],
        "rate_periods": [q.rate.period if q.rate else None for q in queues],
    }


def registration_without_limits(names: list[str]) -> dict[str, list[Any]]:
    """sql.DECLARE_QUEUES's arrays for queues known by name only (a workflow's `queue="name"`)."""
    return {
        "names": names,
        "concurrencies": [None] * len(names),
        "per_keys": [None] * len(names),
        "rate_limits": [None] * len(names),
        "rate_periods": [None] * len(names),
    }
