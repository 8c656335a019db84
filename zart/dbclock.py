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


class DbClock:
    """The best bound, so far, of (database time - trio time), and when it was taken."""

    __slots__ = ("_at", "_offset")

    def __init__(self) -> None:
        self._offset: float | None = None  # a lower bound of (database epoch - trio time)
        self._at = 0.0  # trio time of the reading it comes from

    def stale(self, now: float) -> bool:
        """Whether a new reading is due (none yet, or the kept one is old)."""
        return self._offset is None or now - self._at > REFRESH_SECONDS

    def read(self, sent: float, database_epoch: float, answered: float) -> None:
        """Keep a reading of the database's clock, made between `sent` and `answered` (trio's clock)
        if it bounds the two clocks' difference more tightly than the one kept, aged."""
        if answered < sent:
            raise ValueError("a reading's answer cannot come before it was sent")
        offset = database_epoch - answered
        if self._offset is None or offset >= self._aged(answered):
            self._offset, self._at = offset, answered

    def to_trio(self, database_epoch: float) -> float | None:
        """The moment on trio's clock that is surely no earlier than `database_epoch` on the
        database's (None before the first reading)."""
        if self._offset is None:
            return None
        moment = database_epoch - self._offset
        # The clocks may have drifted apart between the reading and that moment, by up to DRIFT
        # per second (of trio's clock: hence the division, which covers the drift of the drift).
        return moment + DRIFT * abs(moment - self._at) / (1 - DRIFT)

    def _aged(self, now: float) -> float:
        assert self._offset is not None
        return self._offset - DRIFT * abs(now - self._at)
