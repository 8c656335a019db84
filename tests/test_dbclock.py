"""zart.dbclock: a timer's moment placed on the worker's clock is never early, and tight."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zart.dbclock import DRIFT, DbClock

# The database's clock runs ahead of trio's by `offset` at trio time 0, and gains `drift` (within
# DRIFT) per second of trio's: the database's time at trio time t is offset + t * (1 + drift).


def database_time(offset: float, drift: float, t: float) -> float:
    return offset + t * (1 + drift)


def trio_time_of(offset: float, drift: float, database_epoch: float) -> float:
    return (database_epoch - offset) / (1 + drift)


readings = st.lists(
    st.tuples(
        st.floats(0, 600),  # when the reading is sent (trio's clock)
        st.floats(0, 1),  # how far into its round trip the database reads its clock (a fraction)
        st.floats(0, 0.05),  # the round trip
    ),
    min_size=1,
    max_size=8,
)


@given(
    offset=st.floats(1.5e9, 2e9),
    drift=st.floats(-DRIFT * 0.999, DRIFT * 0.999),
    readings=readings,
    ahead=st.floats(0, 3600),
)
def test_a_moment_is_never_placed_early(offset, drift, readings, ahead):
    clock = DbClock()
    for sent, fraction, trip in sorted(readings):
        clock.read(sent, database_time(offset, drift, sent + fraction * trip), sent + trip, 0.0)
    last = max(sent + trip for sent, _, trip in readings)
    due = database_time(offset, drift, last) + ahead
    placed = clock.to_trio(due, last, 0.0)
    assert placed is not None
    # Floats carry about 2e-7 s at today's epochs: that much is rounding, not earliness.
    assert placed >= trio_time_of(offset, drift, due) - 1e-6


def test_a_moment_is_late_by_at_most_the_best_round_trip_and_the_drift_since():
    clock = DbClock()
    offset = 1.8e9
    clock.read(10.0, offset + 10.010, 10.020, 0.0)  # a slow reading: 20 ms round trip
    clock.read(20.0, offset + 20.0001, 20.0002, 0.0)  # a quick one: 0.2 ms
    clock.read(21.0, offset + 21.004, 21.008, 0.0)  # slower than the quick one, aged 1 s: not kept
    placed = clock.to_trio(offset + 21.5, 21.1, 0.0)
    assert placed is not None
    late = placed - 21.5
    assert 0 <= late <= 0.0002 + DRIFT * 1.5 + 1e-6


def test_no_reading_no_moment_and_a_reading_goes_stale():
    clock = DbClock()
    assert clock.to_trio(1.8e9, 0.0, 0.0) is None
    assert clock.stale(0.0, 0.0)
    clock.read(1.0, 1.8e9, 1.001, 0.0)
    assert not clock.stale(2.0, 0.0)
    assert clock.stale(60.0, 0.0)
    with pytest.raises(ValueError, match="answer cannot come before"):
        clock.read(5.0, 1.8e9, 4.0, 0.0)


def test_a_step_of_the_wall_clock_drops_the_reading():
    """The wall clock stepped back 10 ms against trio's (an NTP step, a VM catching up): a moment
    placed by the reading from before could be early, so there is none until a new reading."""
    clock = DbClock()
    clock.read(1.0, 1.8e9 + 1.0, 1.0001, 0.0)
    assert clock.to_trio(1.8e9 + 3.0, 2.0, 0.0) is not None
    assert clock.to_trio(1.8e9 + 3.0, 2.0, -0.010) is None
    assert clock.stale(2.0, -0.010)
    clock.read(2.0, 1.8e9 + 1.99, 2.0001, -0.010)  # the new reading, after the step, is kept
    placed = clock.to_trio(1.8e9 + 3.0, 2.1, -0.010)
    assert placed is not None and placed >= 3.0 + 0.01 - 1e-6
