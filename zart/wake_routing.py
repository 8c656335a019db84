"""Which machine's workers a notification wakes, when several machines share one database.

Within one supervisor the workers already claim as one (zart.shared_claims): a notification makes
one of them claim. Across supervisors (machines) there is no shared memory, and every listening
worker hears every NOTIFY: with four machines, each notification made four claim queries, three of
which found nothing. So the notifications are shared out instead, through PostgreSQL only:

- Each *group* (a `zart supervise --name`, or a worker running on its own) is listed in `zart_workers`;
  every worker reads the live, listening groups with its heartbeat (sql.LIVE_GROUPS).
- A NOTIFY carries a key, its transaction's id (sql.WAKE_KEY). Every group ranks the groups for that
  key the same way (rendezvous hashing: crc32 of key and group name), and only the first acts on it.
  A key picks a different group from one transaction to the next, so the work spreads.
- A group that is first but has no room at all (every worker full) hands the notification on to the
  next group in the key's order, with one NOTIFY (`key/hop`), at most one per `FORWARD_SECONDS`
  (`Forwarder`): what is waiting is claimed by a machine with room, not left until a slot frees or
  a poll. When every group is full, a notification goes round them all and stops at the last.
- An empty payload (a queue's limits changed) wakes every group, as does anything unknown.

The groups' lists can disagree for a moment (a machine joined or died since the last heartbeat): a
key may then wake two groups, or none. None costs latency, never work: every worker still polls
(`--poll-interval`) and looks at the earliest timer, and a group that finds itself alone in the list
acts on every key.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio

from .sql import GROUPS_CHANGED, LIVE_GROUPS

if TYPE_CHECKING:
    import psycopg

# A group with no room hands notifications on at most this often: one hand-over wakes a group that
# claims a whole batch, and under a saturating load (every group full) hand-overs would be wasted.
FORWARD_SECONDS = 0.1


def read_live_groups(conn: psycopg.Connection) -> list[str]:
    """The live listening groups (sql.LIVE_GROUPS), for `WakeRouter.set_groups`: read by the
    heartbeat in its transaction, and by the listener when they changed."""
    return [row[0] for row in conn.execute(LIVE_GROUPS).fetchall()]


def ranking(key: str, groups: Sequence[str]) -> list[str]:
    """The groups in the order they take a notification with `key` (the same on every machine)."""
    return sorted(groups, key=lambda group: (zlib.crc32(f"{key}|{group}".encode()), group), reverse=True)


class WakeRouter:
    """One worker's decisions on the notifications it hears, for its group `me`."""

    def __init__(self, me: str, has_room: Callable[[], bool]) -> None:
        self.me = me
        self._has_room = has_room
        self._groups: tuple[str, ...] = (me,)
        self.acted = 0  # notifications this group acted on, and of them those it handed on
        self.handed_on = 0
        self.stale = True  # the groups must be read (at the start, after a change)

    @property
    def groups(self) -> tuple[str, ...]:
        return self._groups

    def set_groups(self, groups: Sequence[str]) -> None:
        """The live listening groups, as the heartbeat read them (this one always among them)."""
        self._groups = tuple(sorted({*groups, self.me}))
        self.stale = False

    def hear(self, payload: str) -> tuple[bool, str | None]:
        """(whether to wake this worker's claimer, the payload to hand the notification on with).

        A notification that workers joined or left makes the groups `stale`: the listener reads
        them again."""
        if payload == GROUPS_CHANGED:
            self.stale = True
            return False, None
        key, _, hop_text = payload.partition("/")
        if not key or (hop_text and not hop_text.isdigit()):
            self.acted += 1
            return True, None  # for every group
        hop = int(hop_text or 0)
        order = ranking(key, self._groups)
        if hop >= len(order) or order[hop] != self.me:
            return False, None
        self.acted += 1
        if self._has_room() or hop + 1 >= len(order):
            return True, None
        self.handed_on += 1
        return True, f"{key}/{hop + 1}"


class Forwarder:
    """Sends the notifications a group hands on (`WakeRouter.hear`), at most one per
    FORWARD_SECONDS: the first at once, then the latest of those offered meanwhile at the end of the
    interval. One is enough: the group it wakes claims a batch, every ready task it has room for."""

    def __init__(self, send: Callable[[str], Awaitable[None]]) -> None:
        self._send = send
        self._pending: str | None = None
        self._offered = trio.Event()

    def offer(self, payload: str) -> None:
        self._pending = payload
        self._offered.set()

    async def run(self) -> None:
        while True:
            await self._offered.wait()
            self._offered = trio.Event()
            payload, self._pending = self._pending, None
            if payload is None:
                continue
            await self._send(payload)
            await trio.sleep(FORWARD_SECONDS)
