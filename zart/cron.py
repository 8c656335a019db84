"""Cron expressions, time zones and catch-up policies of schedules: checked once, at decoration or
call time, so that a typo fails where it was written.

Parsing and iteration are croniter's: 5 fields (minute hour day month weekday), or 6 with a trailing
seconds field (`* * * * * *`: every second). Firings are computed in the schedule's time zone
(zoneinfo) and stored in UTC. Across daylight saving changes croniter's rule applies: a local time that
does not exist (02:30 on a spring-forward night in Europe/Berlin) fires at the first moment after the
gap (03:00 local), and one that exists twice (02:30 on a fall-back night) fires twice, once in each
offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import CroniterBadDateError, croniter

CATCH_UP = ("latest", "all", "none")


@attrs.frozen
class Cron:
    """A checked schedule rule: its expression, time zone and catch-up policy."""

    expression: str
    timezone: str
    catch_up: str

    def after(self, moment: datetime) -> datetime:
        """The first firing strictly after `moment` (aware), in UTC."""
        return next(self.firings(moment))

    def firings(self, moment: datetime) -> Iterator[datetime]:
        """The firings strictly after `moment` (aware), in UTC, in order."""
        it = croniter(self.expression, moment.astimezone(ZoneInfo(self.timezone)))
        while True:
            yield it.get_next(datetime).astimezone(UTC)


def check(expression: Any, timezone: Any = "UTC", catch_up: Any = "latest", what: str = "schedule") -> Cron:
    """A `Cron`, or ValueError/TypeError naming `what` and the problem."""
    if not isinstance(expression, str):
        raise TypeError(f"{what}: the cron expression must be a string, not {type(expression).__name__}")
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(expression):
        raise ValueError(
            f"{what}: invalid cron expression {expression!r} (5 fields: minute hour day month weekday, "
            "e.g. '0 3 * * *'; or 6 with seconds last, e.g. '* * * * * */10')"
        )
    if not isinstance(timezone, str) or not timezone:
        raise TypeError(f"{what}: timezone must be an IANA name such as 'Europe/Berlin', not {timezone!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{what}: unknown timezone {timezone!r} (an IANA name such as 'Europe/Berlin')"
        ) from None
    if catch_up not in CATCH_UP:
        raise ValueError(
            f"{what}: catch_up must be one of {', '.join(map(repr, CATCH_UP))}, not {catch_up!r}"
        )
    cron = Cron(" ".join(fields), timezone, catch_up)
    try:
        cron.after(datetime.now(UTC))
    except CroniterBadDateError:
        raise ValueError(f"{what}: cron expression {expression!r} never fires") from None
    return cron


def firing_id(schedule: str, moment: datetime) -> str:
    """The execution id of a schedule's firing: `NAME@2026-11-27T03:00:00Z` (UTC)."""
    return f"{schedule}@{iso(moment)}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def previous(rule: Cron, moment: datetime) -> datetime:
    """The last firing strictly before `moment` (aware), in UTC."""
    it = croniter(rule.expression, moment.astimezone(ZoneInfo(rule.timezone)))
    return it.get_prev(datetime).astimezone(UTC)
