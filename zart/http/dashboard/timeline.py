"""The geometry of an execution's timeline: a Gantt chart the server draws as inline SVG.

One row per history entry, in history order: a step's attempts as bars on the time axis (coloured by
outcome, each retry marked at its start, the back-off the gap before it), a sleep or an event wait as
a hollow bar from its start to its end (or to now while it waits) with its deadline marked, a child as
a bar for its run. The branches of `zart.parallel` / `zart.map` are consecutive entries that overlap in
time, so they appear side by side. Pure functions of the records, so tests can check the drawing
without a browser; the template only places what is computed here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from ...client import AttemptRecord, ExecutionInfo, StepRecord

LABEL_WIDTH = 260
CHART_WIDTH = 640
ROW_HEIGHT = 22
AXIS_HEIGHT = 24
MAX_ROWS = 200
# Entries that are instants, not spans: listed in the history table, not drawn.
NOT_DRAWN = ("emit", "patch")


@attrs.frozen
class Bar:
    x: float
    width: float
    kind: str  # succeeded | failed | timed_out | abandoned | running | wait | child
    title: str
    attempt: int = 0


@attrs.frozen
class Mark:
    x: float
    kind: str  # retry | deadline | later (a deadline after the chart's end)
    title: str


@attrs.frozen
class Row:
    y: float
    label: str
    key: str
    kind: str
    bars: list[Bar]
    marks: list[Mark]


@attrs.frozen
class Tick:
    x: float
    label: str


@attrs.frozen
class Timeline:
    width: int
    height: int
    label_width: int
    rows: list[Row]
    ticks: list[Tick]
    hidden: int  # entries beyond MAX_ROWS


def seconds_text(seconds: float, digits: str = ".3g") -> str:
    """A duration in the unit that suits it (ms, s, min, h, d), for people."""
    for limit, unit, size in ((1, "ms", 0.001), (120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} ms" if unit == "ms" else f"{seconds / size:{digits}} {unit}"
    return f"{seconds / 86400:{digits}} d"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


class _Axis:
    """Maps moments to x: `start` at LABEL_WIDTH, `end` at the right edge."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 0.001)

    def x(self, moment: datetime) -> float:
        offset = (moment - self.start).total_seconds() / self.span
        return LABEL_WIDTH + CHART_WIDTH * min(max(offset, 0.0), 1.0)

    def within(self, moment: datetime) -> bool:
        return (moment - self.start).total_seconds() <= self.span

    def bar(self, begin: datetime, end: datetime) -> tuple[float, float]:
        left = self.x(begin)
        return left, max(self.x(end) - left, 2.0)


def _attempt_bar(axis: _Axis, attempt: AttemptRecord, now: datetime) -> Bar:
    end = attempt.finished_at or now
    kind = attempt.outcome or "running"
    took = seconds_text((end - attempt.started_at).total_seconds())
    title = f"attempt {attempt.attempt}: {kind}, {took}"
    if attempt.error_type:
        title += f" ({attempt.error_type}: {attempt.error_message or ''})"
    x, width = axis.bar(attempt.started_at, end)
    return Bar(x, width, kind, title, attempt.attempt)


def _wait_title(step: StepRecord) -> str:
    name = step.key.split(":", 1)[-1]
    what = {"sleep": "sleeps", "event": f"waits for event {name.split('#')[0]!r}", "child": "waits for child"}
    text = what.get(step.kind, step.kind)
    if step.wake_at is not None:
        text += f" until {_when(step.wake_at)}"
    if step.status == "waiting":
        return text + " (waiting now)"
    return text + f" ({step.status})"


def _entry_row(axis: _Axis, y: float, step: StepRecord, attempts: list[AttemptRecord], now: datetime) -> Row:
    bars: list[Bar] = []
    marks: list[Mark] = []
    if step.kind == "step" or attempts:
        for attempt in attempts:
            bar = _attempt_bar(axis, attempt, now)
            bars.append(bar)
            if attempt.attempt > 1:
                marks.append(Mark(bar.x, "retry", f"retry: attempt {attempt.attempt}"))
        if not attempts and step.finished_at is not None:  # a checkpoint without attempt records
            begin = step.started_at or step.finished_at
            x, width = axis.bar(begin, step.finished_at)
            bars.append(Bar(x, width, "succeeded" if step.status == "completed" else "failed", step.status))
    elif step.started_at is not None or step.finished_at is not None:
        begin = step.started_at or step.finished_at or now
        end = step.finished_at or now
        x, width = axis.bar(begin, end)
        bars.append(Bar(x, width, "child" if step.kind == "child" else "wait", _wait_title(step)))
    if step.wake_at is not None and step.kind in ("sleep", "event"):
        if axis.within(step.wake_at):
            marks.append(Mark(axis.x(step.wake_at), "deadline", f"deadline {_when(step.wake_at)}"))
        else:  # later than the chart's end (now): an arrow at the edge, not a mark at a wrong place
            marks.append(Mark(axis.x(step.wake_at), "later", f"deadline {_when(step.wake_at)}, after now"))
    label = step.key if len(step.key) <= 40 else step.key[:39] + "…"
    return Row(y, label, step.key, step.kind, bars, marks)


def build(
    info: ExecutionInfo, steps: list[StepRecord], attempts: list[AttemptRecord], now: datetime
) -> Timeline:
    """The timeline of one execution as of `now` (the database's clock)."""
    by_step: dict[str, list[AttemptRecord]] = {}
    for attempt in attempts:
        by_step.setdefault(attempt.step_key, []).append(attempt)
    entries = [step for step in steps if step.kind not in NOT_DRAWN]
    known = {step.key for step in steps}
    # A step running now, or between retries, has attempts but no history entry yet.
    for key, found in by_step.items():
        if key not in known:
            entries.append(
                StepRecord(
                    key,
                    len(steps) + len(entries),
                    "step",
                    "running",
                    None,
                    None,
                    len(found),
                    None,
                    None,
                    None,
                )
            )
    moments = [info.created_at]
    moments += [moment for a in attempts for moment in (a.started_at, a.finished_at) if moment]
    moments += [moment for s in entries for moment in (s.started_at, s.finished_at) if moment]
    start = min(moments)
    end = info.finished_at or now
    end = max([end, *moments])
    axis = _Axis(start, end + timedelta(milliseconds=1))
    shown = entries[:MAX_ROWS]
    rows = [
        _entry_row(axis, AXIS_HEIGHT + index * ROW_HEIGHT, step, by_step.get(step.key, []), now)
        for index, step in enumerate(shown)
    ]
    ticks = [
        Tick(LABEL_WIDTH + CHART_WIDTH * fraction, "+" + seconds_text(axis.span * fraction))
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    return Timeline(
        LABEL_WIDTH + CHART_WIDTH + 60,
        AXIS_HEIGHT + max(len(rows), 1) * ROW_HEIGHT + 8,
        LABEL_WIDTH,
        rows,
        ticks,
        len(entries) - len(shown),
    )
