"""An event whose waiters cannot be cancelled: a shielded wait without a cancel scope per wait.

A commit, once handed to the completer, runs to its end, so a runner waiting for it must not be cut
off by a timeout or a stop (it would not know what is durable). `with trio.CancelScope(shield=True):
await event.wait()` says that, but entering a shielded scope builds and links a cancel status each
time: a few microseconds that came to about 15% of a worker's event-loop time with inline branches,
which wait for a commit two or three times per step. This event parks its waiters with an abort
function that refuses every cancellation (what trio's own uncancellable waits do); a cancellation
that comes meanwhile is delivered at the waiter's next checkpoint.
"""

from __future__ import annotations

import trio


class ShieldedEvent:
    """A one-shot event (trio's `Event`, but its `wait` is shielded from cancellation)."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[trio.lowlevel.Task] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Wake every waiter; later waits return at once."""
        if self._flag:
            return
        self._flag = True
        for task in self._waiters:
            trio.lowlevel.reschedule(task)
        self._waiters.clear()

    async def wait(self) -> None:
        """Until `set()`; a cancellation meanwhile does not end the wait (it is raised later)."""
        if self._flag:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._waiters.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(_refuse)


def _refuse(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
