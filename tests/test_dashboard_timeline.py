"""The geometry of the dashboard's drawings, without a server: the execution timeline and the
overview's throughput chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from zart.client import AttemptRecord, ExecutionInfo, StepRecord
from zart.http.dashboard import charts, timeline
from zart.http.dashboard.timeline import CHART_WIDTH, LABEL_WIDTH, MAX_ROWS

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def info(finished: float | None = None) -> ExecutionInfo:
    return ExecutionInfo(
        "e", "wf", "running", None, None, None, T0, at(0), None if finished is None else at(finished)
    )


def step(
    key: str, position: int, begin: float, end: float | None, kind: str = "step", wake: float | None = None
):
    status = "waiting" if end is None else "completed"
    return StepRecord(
        key,
        position,
        kind,
        status,
        None,
        None,
        1,
        at(begin),
        None if end is None else at(end),
        wake and at(wake),
    )


def attempt(key: str, number: int, begin: float, end: float | None, outcome: str | None):
    error = ("ValueError", "no") if outcome == "failed" else (None, None)
    return AttemptRecord(key, number, "w", at(begin), None if end is None else at(end), outcome, *error, None)


def test_a_retried_step_has_a_bar_per_attempt_and_each_retry_is_marked():
    steps = [step("charge#1", 0, 0, 10)]
    attempts = [attempt("charge#1", 1, 0, 2, "failed"), attempt("charge#1", 2, 6, 10, "succeeded")]
    drawn = timeline.build(info(finished=10), steps, attempts, at(10))
    (row,) = drawn.rows
    assert [(bar.kind, bar.attempt) for bar in row.bars] == [("failed", 1), ("succeeded", 2)]
    first, second = row.bars
    assert first.x == LABEL_WIDTH
    assert first.x + first.width < second.x  # the back-off is the gap between them
    assert second.x + second.width <= LABEL_WIDTH + CHART_WIDTH + 0.01
    assert [(mark.kind, mark.x) for mark in row.marks] == [("retry", second.x)]
    assert "ValueError: no" in first.title


def test_a_waiting_sleep_runs_to_now_and_its_deadline_is_marked():
    steps = [step("a#1", 0, 0, 1), step("sleep:nap#1", 1, 1, None, kind="sleep", wake=5)]
    drawn = timeline.build(info(), steps, [attempt("a#1", 1, 0, 1, "succeeded")], at(10))
    nap = drawn.rows[1]
    (bar,) = nap.bars
    assert bar.kind == "wait" and "waiting now" in bar.title
    assert round(bar.x + bar.width) == LABEL_WIDTH + CHART_WIDTH  # to now, the right edge
    (deadline,) = nap.marks
    assert deadline.kind == "deadline" and LABEL_WIDTH < deadline.x < LABEL_WIDTH + CHART_WIDTH


def test_a_deadline_after_now_is_an_arrow_at_the_edge_not_a_mark_in_the_wrong_place():
    steps = [step("event:go#1", 0, 0, None, kind="event", wake=3600)]
    (row,) = timeline.build(info(), steps, [], at(10)).rows
    (mark,) = row.marks
    assert mark.kind == "later"


def test_branches_overlap_side_by_side_and_instants_are_not_drawn():
    steps = [
        step("pack[0]", 0, 1, 4),
        step("pack[1]", 1, 1, 3),
        step("emit:progress#1", 2, 4, 4, kind="emit"),
        step("ship#1", 3, 4, 5),
    ]
    attempts = [
        attempt("pack[0]", 1, 1, 4, "succeeded"),
        attempt("pack[1]", 1, 1, 3, "succeeded"),
        attempt("ship#1", 1, 4, 5, "succeeded"),
    ]
    drawn = timeline.build(info(finished=5), steps, attempts, at(5))
    assert [row.key for row in drawn.rows] == ["pack[0]", "pack[1]", "ship#1"]
    first, second = (row.bars[0] for row in drawn.rows[:2])
    assert first.x == second.x  # they began together
    assert drawn.rows[0].y < drawn.rows[1].y  # one row each, one above the other


def test_a_step_running_now_is_drawn_before_its_checkpoint_exists():
    drawn = timeline.build(info(), [], [attempt("slow#1", 1, 0, None, None)], at(3))
    (row,) = drawn.rows
    assert row.key == "slow#1" and row.bars[0].kind == "running"


def test_rows_are_capped_and_the_rest_counted():
    count = MAX_ROWS + 25
    steps = [step(f"s[{i}]", i, i, i + 1) for i in range(count)]
    drawn = timeline.build(info(finished=count), steps, [], at(count))
    assert len(drawn.rows) == MAX_ROWS and drawn.hidden == 25


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1e6), st.floats(0, 1e6), st.sampled_from(["succeeded", "failed", None])),
        min_size=1,
        max_size=30,
    ),
    st.floats(0, 2e6),
)
def test_every_bar_lies_on_the_chart_whatever_the_times(spans, now):
    attempts = [
        attempt(f"s{index}", 1, min(a, b), None if outcome is None else max(a, b), outcome)
        for index, (a, b, outcome) in enumerate(spans)
    ]
    drawn = timeline.build(info(), [], attempts, at(now))
    for row in drawn.rows:
        for bar in row.bars:
            assert LABEL_WIDTH <= bar.x <= LABEL_WIDTH + CHART_WIDTH
            assert bar.width >= 2
            assert bar.x + bar.width <= LABEL_WIDTH + CHART_WIDTH + 2


def test_the_throughput_chart_scales_to_the_busiest_minute():
    minutes = [(0, 0)] * 58 + [(30, 10), (5, 0)]
    chart = charts.throughput(minutes)
    assert chart.peak == 40 and chart.total == 45
    busiest = chart.columns[58]
    assert round(busiest.done_height + busiest.other_height) == chart.height - charts.TOP
    assert busiest.other_y + busiest.other_height == busiest.done_y  # stacked
    assert chart.columns[0].done_height == 0 and "59 min ago" in chart.columns[0].title
    assert charts.throughput([(0, 0)] * 60).peak == 1  # an idle hour draws flat, no division by zero
