"""What the database recorded of one execution, and the replay's walk through it.

A workflow body is re-run from its start on every claim. Each durable call it makes (a step, a sleep,
an event wait, each branch of a fan-out) takes the next position in the history and a key (`name#k`,
the k-th such call). While the body is behind its history, the entry recorded at that position
answers the call; past the history, the call is new and runs for real.

An entry with another key at that position, or the key recorded at another position, means the
workflow's code changed under a running execution. That divergence is sticky (`History.entry_at`):
once seen, every later durable call raises it again, so a workflow that catches it can do nothing
durable past it.

A patch marker (`zart.patched`) is the one exception to that rule: another key at its position is the
history of code from before the patch, and the marker takes no position there (`History.marker_at`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, NoReturn

import attrs
import trio

from . import serde
from .errors import ChildFailed, NonDeterminismError, StepFailed


@attrs.frozen
class Checkpoint:
    """One recorded history entry: a step, a sleep, an event wait or a patch marker."""

    key: str
    seq: int
    status: str  # completed | failed | waiting (a sleep or event wait not over yet)
    output: str | None
    error: str | None
    kind: str = "step"  # step | sleep | event | patch | emit | child
    wake_in: float | None = None  # seconds from the claim to the wait's deadline


@attrs.frozen
class PendingEvent:
    """An event delivered to the execution and not consumed yet."""

    id: int
    name: str
    payload: str | None


@attrs.frozen
class LastAttempt:
    """The latest attempt of a step that has no checkpoint yet."""

    attempt: int
    still_open: bool
    failures: int = 0  # attempts that failed or timed out: the retry budget already spent
    crashes: int = 0  # attempts that died with their worker (the open one included)


def recorded_value(recorded: Checkpoint) -> Any:
    """A step's recorded result, or its recorded failure raised again."""
    if recorded.status == "completed":
        return serde.loads(recorded.output)
    error = serde.loads(recorded.error) or {}
    if recorded.kind == "child":
        raise ChildFailed(
            recorded.key,
            error.get("message", ""),
            error.get("traceback", ""),
            error.get("child_id"),
            error.get("child_status"),
            error.get("child_error"),
        )
    raise StepFailed(
        recorded.key,
        error.get("type", "Error"),
        error.get("message", ""),
        error.get("traceback", ""),
    )


class History:
    """One execution's recorded entries by position, and how far the body has come through them."""

    __slots__ = (
        "_calls",
        "_claimed_at",
        "_recorded_positions",
        "entries",
        "execution_id",
        "nondeterminism",
        "patches",
        "position",
    )

    def __init__(self, execution_id: str, checkpoints: list[Checkpoint], claimed_at: float) -> None:
        self.execution_id = execution_id
        self.entries = {checkpoint.seq: checkpoint for checkpoint in checkpoints}
        self._recorded_positions = {checkpoint.key: checkpoint.seq for checkpoint in checkpoints}
        self.nondeterminism: NonDeterminismError | None = None
        self.position = 0  # the position of the next durable call
        # Patch id -> what zart.patched answered in this run: one answer per patch per run (zart.patches).
        self.patches: dict[str, bool] = {}
        self._calls: defaultdict[tuple[str, str], int] = defaultdict(int)
        # Recorded wait deadlines are relative to the claim (Checkpoint.wake_in): the trio clock
        # when the claim's answer arrived.
        self._claimed_at = claimed_at

    def count_call(self, kind: str, name: str) -> int:
        """How many calls of this kind and name the body made so far, this one included."""
        self._calls[(kind, name)] += 1
        return self._calls[(kind, name)]

    def next_key(self, kind: str, name: str) -> str:
        """`name#k` for the k-th step `name`; sleeps and waits get their own `sleep:`/`event:` keys."""
        # count_call inlined: this runs once per step call.
        self._calls[(kind, name)] += 1
        count = self._calls[(kind, name)]
        return f"{name}#{count}" if kind == "step" else f"{kind}:{name}#{count}"

    def next_entry(self, key: str) -> tuple[int, Checkpoint | None]:
        """This call's position, and what the history recorded there (None: nothing yet)."""
        position = self.position
        self.position += 1
        return position, self.entry_at(position, key)

    def take_positions(self, count: int) -> int:
        """Reserve `count` consecutive positions (a fan-out's branches); the first of them."""
        first = self.position
        self.position += count
        return first

    def entry_at(self, position: int, key: str) -> Checkpoint | None:
        """What the history recorded at `position` for `key`; NonDeterminismError if it diverged."""
        if self.nondeterminism is not None:
            # The workflow caught the error and went on: nothing durable may happen past a
            # divergence, so every later step, sleep, wait or fan-out raises it again.
            raise self.nondeterminism
        recorded = self.entries.get(position)
        elsewhere = self._recorded_positions.get(key)
        if (recorded is not None and recorded.key != key) or (elsewhere not in (None, position)):
            self._diverge(position, key, recorded)
        return recorded

    def marker_at(self, key: str) -> Checkpoint | None:
        """What the history recorded at the current position, for a patch marker `key` (`zart.patches`).

        Unlike `entry_at`, another entry there is no divergence: it was recorded by the code from
        before the patch, and is left to the calls that follow. The marker is consumed (the position
        moves past it). None: the history ends here, and the caller decides whether to record the
        marker. The marker recorded at another position is a divergence, as any key out of place is.
        """
        if self.nondeterminism is not None:
            raise self.nondeterminism
        position = self.position
        recorded = self.entries.get(position)
        if self._recorded_positions.get(key) not in (None, position):
            self._diverge(position, key, recorded)
        if recorded is not None and recorded.key == key:
            self.position += 1
        return recorded

    def _diverge(self, position: int, key: str, recorded: Checkpoint | None) -> NoReturn:
        """Record and raise the divergence at `position`: the code reached `key` there."""
        found = recorded.key if recorded is not None else None
        self.nondeterminism = NonDeterminismError(
            f"execution {self.execution_id!r}: replay reached {key!r} at position {position + 1}, "
            f"but the history recorded {found or 'nothing'!r} there; the workflow's code changed its "
            "steps since this execution started",
            position,
            found,
            key,
        )
        raise self.nondeterminism

    def remaining(self, recorded: Checkpoint) -> float:
        """Seconds left before a recorded wait's deadline (inf when it has none)."""
        if recorded.wake_in is None:
            return math.inf
        return recorded.wake_in - (trio.current_time() - self._claimed_at)

    def unreached(self) -> NonDeterminismError | None:
        """The error for history entries past where the body ended, if there are any.

        Code that lost steps would otherwise end "completed" with part of its history never replayed.
        """
        unreached = sorted(seq for seq in self.entries if seq >= self.position)
        if not unreached:
            return None
        first = self.entries[unreached[0]]
        return NonDeterminismError(
            f"execution {self.execution_id!r}: the workflow ended after {self.position} history "
            f"entries, but the history recorded {len(self.entries)}: {first.key!r} at position "
            f"{first.seq + 1} was never reached; the workflow's code changed its steps since this "
            "execution started",
            first.seq,
            first.key,
            None,
        )
