"""Retry policies: `"none"`, `"fixed(N, DELAY)"`, `"exponential(N, BASE[, MAX])"`, or `zart.Retry`.

N counts retries after the first attempt. The wait before a retry is never an in-memory sleep: the
execution's task is rescheduled in PostgreSQL (`run_at`), so a crash during the back-off loses nothing
and no worker slot is held while waiting.
"""

from __future__ import annotations

import random
import re
from datetime import timedelta
from typing import Any

import attrs

from .durations import GRAMMAR as DURATION_GRAMMAR
from .durations import MAX_SECONDS, parse_duration

GRAMMAR = (
    'a retry policy is "none", "fixed(N, DELAY)" or "exponential(N, BASE[, MAX])", '
    'e.g. "fixed(3, 500ms)" or "exponential(5, 2s, 1m)", where N is the number of retries after the '
    f"first attempt (a whole number >= 0); {DURATION_GRAMMAR}"
)

_CALL = re.compile(r"^\s*(fixed|exponential)\s*\((.*)\)\s*$")


@attrs.frozen
class Retry:
    """A retry policy. Use `Retry.fixed(...)`, `Retry.exponential(...)` or `Retry.none()`."""

    retries: int = 0
    delay: float = 0.0  # the fixed delay, or the first one of an exponential back-off
    backoff: float = 1.0  # 1 for fixed, 2 for exponential
    max_delay: float | None = None
    jitter: bool = False
    non_retryable: tuple[type[BaseException], ...] = ()

    @classmethod
    def none(cls) -> Retry:
        return cls()

    @classmethod
    def fixed(
        cls,
        retries: int,
        delay: str | timedelta | float,
        *,
        jitter: bool = False,
        non_retryable: tuple[type[BaseException], ...] = (),
    ) -> Retry:
        """`retries` retries, each `delay` after the previous attempt failed."""
        return _explained(
            repr((retries, delay)), lambda: cls._build(retries, delay, 1.0, None, jitter, non_retryable)
        )

    @classmethod
    def exponential(
        cls,
        retries: int,
        base: str | timedelta | float,
        max: str | timedelta | float | None = None,
        *,
        jitter: bool = False,
        non_retryable: tuple[type[BaseException], ...] = (),
    ) -> Retry:
        """`retries` retries after `base`, `2*base`, `4*base`, ... capped at `max`."""
        return _explained(
            repr((retries, base, max)), lambda: cls._build(retries, base, 2.0, max, jitter, non_retryable)
        )

    @classmethod
    def _build(
        cls, retries: Any, delay: Any, backoff: float, cap: Any, jitter: bool, non_retryable: Any
    ) -> Retry:
        """The policy, or ValueError with the bare reason (the callers add the grammar)."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"N must be a whole number >= 0, got {retries!r}")
        first = parse_duration(delay, "delay")
        max_delay = None if cap is None else parse_duration(cap, "MAX")
        if max_delay is not None and max_delay < first:
            raise ValueError(f"MAX {cap!r} is shorter than BASE {delay!r}")
        return cls(retries, first, backoff, max_delay, jitter, _check_types(non_retryable))

    @classmethod
    def parse(cls, policy: Any) -> Retry:
        """A policy from what `retry=` accepts; ValueError showing the grammar otherwise."""
        if policy is None:
            return cls()
        if isinstance(policy, Retry):
            return policy
        if isinstance(policy, str) and policy.strip() == "none":
            return cls()
        match = _CALL.match(policy) if isinstance(policy, str) else None
        if not match:
            raise ValueError(f"invalid retry policy {policy!r}: {GRAMMAR}")
        kind, arguments = match.group(1), [part.strip() for part in match.group(2).split(",")]

        def build() -> Retry:
            if not re.fullmatch(r"\d+", arguments[0]):
                raise ValueError(f"N must be a whole number >= 0, got {arguments[0]!r}")
            retries = int(arguments[0])
            if kind == "fixed":
                if len(arguments) != 2:
                    raise ValueError("fixed takes exactly N and DELAY")
                return cls._build(retries, arguments[1], 1.0, None, False, ())
            if len(arguments) not in (2, 3):
                raise ValueError("exponential takes N, BASE and optionally MAX")
            cap = arguments[2] if len(arguments) == 3 else None
            return cls._build(retries, arguments[1], 2.0, cap, False, ())

        return _explained(repr(policy), build)

    def should_retry(self, failures: int, error: BaseException) -> bool:
        """After `failures` failed attempts (this one included), is there another attempt?"""
        from .errors import NonRetryable

        if isinstance(error, (NonRetryable, *self.non_retryable)):
            return False
        return failures <= self.retries

    def delay_before_retry(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 for the first retry)."""
        try:
            delay = min(self.delay * (self.backoff ** (retry_number - 1)), MAX_SECONDS)
        except OverflowError:  # 2.0 ** 2000: a float cannot hold it, and no delay may pass MAX_SECONDS
            delay = MAX_SECONDS
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        if self.jitter:  # "equal jitter": between half the delay and the whole of it
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay


def _explained(policy: str, build: Any) -> Retry:
    try:
        return build()
    except ValueError as exc:
        reason = str(exc).split(": a duration is")[0]
        raise ValueError(f"invalid retry policy {policy} ({reason}): {GRAMMAR}") from None


def _check_types(types: Any) -> tuple[type[BaseException], ...]:
    if isinstance(types, type):
        types = (types,)
    types = tuple(types)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValueError(f"non_retryable must be exception classes, got {item!r}")
    return types
