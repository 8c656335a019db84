"""What the forked workers of one supervisor share to claim as one: a baton, their free slots, and a
way to wake one of the spare workers.

With more workers than CPUs, the first one per CPU (the primaries) take the work while they have
room; the others (the spares) claim only when no live primary has room. A spare does not LISTEN: with
`--procs 16` on 2 cores, fourteen listening spares woke (and made fourteen database sessions wake)
on every notification only to find that a primary had claimed it. It is woken instead through its
own pipe, by a worker that finds every primary full while work may be waiting (`wake_spare`), and
it still looks at the earliest future `run_at` and every poll interval by itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from typing import Any

import attrs
import trio


@attrs.frozen
class SharedClaims:
    """Shared memory and pipes, made by the supervisor before it forks its workers.

    `baton`: a claim is under way until this time (time.time()). For each worker (by rank, its
    supervisor slot): `free`, its free slots, and `seen`, when its claim loop last went round. A
    worker counts as live while its loop went round within `alive_seconds`, so a primary that is
    stopped, hung or dead does not hold the others back for longer than that. `pipes`: each
    worker's wake-up pipe (read end, write end), non-blocking.
    """

    baton: Any
    free: Any
    seen: Any
    primaries: int
    alive_seconds: float
    pipes: tuple[tuple[int, int], ...]

    @classmethod
    def create(cls, primaries: int, workers: int, alive_seconds: float) -> SharedClaims:
        workers = max(1, workers)
        return cls(
            multiprocessing.Value("d", 0.0, lock=False),
            multiprocessing.Array("i", workers, lock=False),
            multiprocessing.Array("d", workers, lock=False),
            max(1, min(primaries, workers)),
            alive_seconds,
            tuple(os.pipe2(os.O_NONBLOCK) for _ in range(workers)),
        )

    def close(self) -> None:
        """Close the pipes (the supervisor, once its workers are gone)."""
        for read_end, write_end in self.pipes:
            os.close(read_end)
            os.close(write_end)

    def is_primary(self, rank: int) -> bool:
        return rank < self.primaries

    def publish(self, rank: int, free: int) -> None:
        """A worker's free slots, as its claim loop goes round."""
        if rank < len(self.free):
            self.free[rank] = free
            self.seen[rank] = time.time()

    def _live_with_room(self, ranks: range, margin: int = 1) -> list[tuple[int, int]]:
        now = time.time()
        return [
            (rank, self.free[rank])
            for rank in ranks
            if self.free[rank] >= margin and now - self.seen[rank] < self.alive_seconds
        ]

    def any_room(self) -> bool:
        """Whether any live worker of the supervisor, primary or spare, has a free slot."""
        return bool(self._live_with_room(range(len(self.free))))

    def primary_has_room(self) -> bool:
        return bool(self._live_with_room(range(self.primaries)))

    def roomier_primary(self, rank: int, free: int, margin: int) -> bool:
        """Whether another live primary has at least `margin` more free slots than `free` (those of
        primary `rank`): it should take the next claim, so that a burst is spread over the CPUs
        rather than run by the first worker to wake while the others idle."""
        return any(other != rank for other, _ in self._live_with_room(range(self.primaries), free + margin))

    def hand_over(self, rank: int) -> bool:
        """Wake the live worker with the most room other than `rank`, a primary if one has room,
        else a spare; False if none has room.

        Called when work may be waiting that `rank` leaves to others: its claim came back full and
        it is full or a primary has a batch more room, or it is full and heard a notification.
        One worker, through its own pipe, not all through a NOTIFY: it hands over in turn if it
        fills up.
        """
        for ranks in (range(self.primaries), range(self.primaries, len(self.free))):
            others = [(free, other) for other, free in self._live_with_room(ranks) if other != rank]
            if others:
                with contextlib.suppress(BlockingIOError):  # a full pipe already holds a wake-up
                    os.write(self.pipes[max(others)[1]][1], b"w")
                return True
        return False

    async def wait_for_wake(self, rank: int) -> None:
        """Return when this worker's pipe was written to (after draining it)."""
        read_end = self.pipes[rank][0]
        while True:
            await trio.lowlevel.wait_readable(read_end)
            try:
                if os.read(read_end, 512):
                    return
            except BlockingIOError:
                continue
