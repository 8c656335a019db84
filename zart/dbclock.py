"""The database's clock read on the worker's: when a timer claimed ahead comes due, never early.

A timer's moment (a sleep's end, a retry's back-off) is a time on the database's clock. The claim
that takes it ahead also said how far off it was, counted from the row's `clock_timestamp()`; the
worker counted that from the claim's answer, the only moment it knows came after. Under load that
answer arrived 3-8 ms after the row was made (the rest of the claim, its commit, the transfer, a
turn of the event loop), and every timer came due that much late.

So each worker also reads the database's clock now and then with a statement that does nothing
else (`sql.DATABASE_CLOCK`). A reading made between `sent` and `answered` (on trio's clock) bounds
the difference between the two clocks: the database's time T happens on trio's clock no later than
T - (reading - answered). The tightest of these bounds is kept, and loosened as it ages by how far
two clocks may drift apart (`DRIFT`), so a moment computed from it is never early: at most a
reading's round trip late (a fraction of a millisecond when the worker is idle).
"""

from __future__ import annotations

# How fast two machines' clocks may drift apart, as a bound: 100 ppm (quartz without NTP is within
# about 50; with NTP, far less). A reading 10 s old is trusted to within 1 ms.
DRIFT = 1e-4
# A reading older than this is refreshed before the next claim.
REFRESH_SECONDS = 5.0
# How far this machine's wall clock may move against trio's (monotonic) clock before a reading is
# dropped: a step of the wall clock (an NTP step, a VM's clock catching up) makes the database's
# clock, on the same machine or synchronised with it, jump against trio's, and a reading from before
# the step could place a moment early.
STEP_SECONDS = 0.0005


class DbClock:
    """The best bound, so far, of (database time - trio time), and when it was taken."""

    __slots__ = ("_at", "_offset", "_wall")

    def __init__(self) -> None:
        self._offset: float | None = None  # a lower bound of (database epoch - trio time)
        self._at = 0.0  # trio time of the reading it comes from
        self._wall = 0.0  # (wall clock - trio time) when it was taken: see STEP_SECONDS

    def stale(self, now: float, wall: float) -> bool:
        """Whether a new reading is due (none yet, the kept one is old, or the wall clock stepped
        since: `wall` is now's wall clock minus trio's time)."""
        return self._offset is None or now - self._at > REFRESH_SECONDS or self._stepped(now, wall)

    def read(self, sent: float, database_epoch: float, answered: float, wall: float) -> None:
        """Keep a reading of the database's clock, made between `sent` and `answered` (trio's clock)
        if it bounds the two clocks' difference more tightly than the one kept, aged (or the wall
        clock stepped since that one). `wall`: the wall clock minus trio's time at `answered`."""
        if answered < sent:
            raise ValueError("a reading's answer cannot come before it was sent")
        offset = database_epoch - answered
        if self._offset is None or self._stepped(answered, wall) or offset >= self._aged(answered):
            self._offset, self._at, self._wall = offset, answered, wall

    def to_trio(self, database_epoch: float, now: float, wall: float) -> float | None:
        """The moment on trio's clock that is surely no earlier than `database_epoch` on the
        database's (None before the first reading, or when the wall clock stepped since it: then
        the caller falls back on its own bound)."""
        if self._offset is None or self._stepped(now, wall):
            return None
        moment = database_epoch - self._offset
        # The clocks may have drifted apart between the reading and that moment, by up to DRIFT
        # per second (of trio's clock: hence the division, which covers the drift of the drift).
        return moment + DRIFT * abs(moment - self._at) / (1 - DRIFT)

    def _stepped(self, now: float, wall: float) -> bool:
        """Whether the wall clock moved against trio's since the reading by more than drift."""
        return abs(wall - self._wall) > STEP_SECONDS + DRIFT * abs(now - self._at)

    def _aged(self, now: float) -> float:
        assert self._offset is not None
        return self._offset - DRIFT * abs(now - self._at)
