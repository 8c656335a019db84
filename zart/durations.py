"""Durations: `250ms`, `2s`, `5m`, `1h`, `1d`, or a `timedelta`.

Parsed once, at decoration time, so that a typo fails when the module is imported rather than hours
later in production.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

GRAMMAR = "a duration is a positive number with a unit: 250ms, 2s, 1.5s, 5m, 1h, 1d (or a timedelta)"

# The longest delay Zart schedules: every duration is added to the database's clock, and PostgreSQL's
# timestamps end in the year 294276, so an unbounded one ("1000000000000d") would fail the
# transaction that holds it. A hundred years is longer than any real timer.
MAX_SECONDS = 100 * 365 * 86400.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: str | timedelta | int | float, what: str = "duration") -> float:
    """Seconds in `value`; raises ValueError naming `what` and showing the grammar."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: {GRAMMAR}")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(f"invalid {what} {value!r}: {GRAMMAR}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"invalid {what} {value!r} (a {type(value).__name__}): {GRAMMAR}")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"invalid {what} {value!r}: at most 100 years ({MAX_SECONDS:.0f} s)")
    if seconds <= 0:
        raise ValueError(f"invalid {what} {value!r}: must be greater than zero; {GRAMMAR}")
    return seconds
