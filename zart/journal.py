"""Durability of one execution: its writes not committed yet, and the commits that end a run.

Writes are deferred so that each step costs one commit: when a step finishes, its checkpoint is kept
pending while the (deterministic, side-effect free) workflow code runs on to its next step call; the
pending checkpoint and the record of the next attempt's start are then committed in ONE transaction,
before the next step's body runs. The step in flight is therefore the only one that can run again
after a crash, and every attempt that started is on record.

The pending writes are one `Fragment`, handed to the worker's batch completer (`zart.completer`),
which commits it together with other executions' fragments. While a fan-out runs its branches in
this execution (`zart.branches`), their flushes coalesce: the branches that flush in one scheduling
round share one fragment. A run ends durably here too: parked (`suspend`: a retry back-off, a sleep,
an event wait, a fan-out), finished, failed or timed out.
"""

from __future__ import annotations

import math
import traceback as traceback_module
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

import attrs
import orjson
import trio

from . import serde
from .completer import Committed, Completer, Fragment
from .durations import MAX_SECONDS
from .shielded import ShieldedEvent


class LeaseLost(BaseException):
    """This worker no longer holds the execution's task: stop without writing anything.

    A BaseException so that a workflow's `except Exception:` cannot swallow it.
    """


class Suspended(BaseException):
    """The execution was rescheduled in the database (a retry back-off, a sleep): stop running it here.

    A BaseException for the same reason as LeaseLost; the runner treats it as a normal end.
    """


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_record(exc: BaseException) -> dict[str, str]:
    """An exception as Zart records it: storable text whatever the exception holds.

    User code decides what an exception's text is; a `__str__` that raises, a NUL or a lone
    surrogate must cost that execution a strange message at worst, never its worker or its batch.
    """
    try:
        message = str(exc)
    except Exception:
        message = f"<the {type(exc).__name__} could not be turned into text>"
    try:
        trace = "".join(traceback_module.format_exception(exc))
    except Exception:
        trace = ""
    return {
        "type": serde.safe_text(type(exc).__name__),
        "message": serde.safe_text(message),
        "traceback": serde.safe_text(trace),
    }


def error_json(exc: BaseException) -> str:
    return orjson.dumps(error_record(exc)).decode()


@attrs.define
class _Round:
    """One commit shared by the inline branches that flush in the same scheduling round."""

    taken: bool = False  # its fragment was handed to the completer: later writes need a new round
    done: ShieldedEvent = attrs.field(factory=ShieldedEvent)
    committed: Committed = Committed.LOST
    error: BaseException | None = None


class Journal:
    """The pending writes of one execution, and the commits that make them durable.

    Whoever records something (a step, a wait, a fan-out) appends to `pending`, which is replaced by
    a fresh fragment at each commit: read it at the moment of writing, never keep it across a flush.
    """

    __slots__ = (
        "_claims",
        "_completer",
        "_paused",
        "_round",
        "_status",
        "_task_id",
        "_wake_claimer",
        "deadline",
        "ended",
        "execution_id",
        "handed_back",
        "in_flight",
        "inline_branches",
        "may_have_children",
        "parent_id",
        "parent_inline",
        "pending",
        "started_at",
    )

    def __init__(
        self,
        *,
        execution_id: str,
        task_id: int,
        claims: int,
        completer: Completer,
        wake_claimer: Callable[[], None],
        status: str,
        deadline: float | None,
        parent_id: str | None = None,
        parent_inline: bool = False,
    ) -> None:
        self.execution_id = execution_id
        self.parent_id = parent_id  # a child execution (zart.child): its end records its outcome there
        self.parent_inline = parent_inline  # ... started by its parent's worker to run at once
        self._task_id = task_id
        self._claims = claims  # the fencing token every fragment carries
        self._completer = completer
        self._wake_claimer = wake_claimer
        self._status = status  # the execution's status as last written
        self.deadline = deadline  # trio clock; a suspension never parks the task past it
        self.started_at = utcnow()
        # Step key -> attempt, of the steps whose start is on record and whose end is not (several:
        # inline branches): a stop or a workflow timeout that comes now closes them.
        self.in_flight: dict[str, int] = {}
        self.pending = self._new_fragment()
        # zart.parallel/map calls running their branches in this execution right now (zart.branches):
        # while there are any, flushes coalesce (`_commit_with_siblings`).
        self.inline_branches = 0
        self._round: _Round | None = None  # the flush that sibling branches may join
        self._paused = False  # a commit found the execution paused: this run is stopping
        # Children of this execution may still run (zart.children): an end other than `completed`
        # cancels them in its commit.
        self.may_have_children = False
        # How the execution ended in this run, once committed: (status, result, error) as JSON text.
        self.ended: tuple[str, str | None, str | None] | None = None
        # A commit handed the task back or ended it: this run holds nothing any more, whatever
        # happens next (a deadline that passed during that commit included).
        self.handed_back = False

    @property
    def task_id(self) -> int:
        return self._task_id

    @property
    def claims(self) -> int:
        """The fencing token of the task this run holds."""
        return self._claims

    def _new_fragment(self) -> Fragment:
        return Fragment(self.execution_id, self._task_id, self._claims)

    def set_status(self, status: str) -> None:
        """Write the execution's status with the next commit, if it changed."""
        if self._status != status:
            self._status = status
            self.pending.execution = (status, None, None, self.started_at, None)

    def mark_running(self) -> None:
        self.set_status("running")

    async def flush(self) -> None:
        """Commit the pending writes (grouped with other executions' by the completer).

        Shielded: once handed over, a commit runs to its end, so a timeout or a shutdown never
        leaves the execution unsure of what is durable (the completer's and the round's waits
        cannot be cancelled: zart.shielded).
        """
        pending = self.pending
        # A commit that hands the task back or ends it goes on as it is when the execution was
        # paused meanwhile: the pause then keeps the task from every claim.
        ends_run = pending.ends_run()
        if self.inline_branches:
            committed = await self._commit_with_siblings()
        else:
            committed = await self._commit_pending()
        if not committed:
            raise LeaseLost(f"lost the lease on execution {self.execution_id!r}")
        if ends_run:
            self.handed_back = True
        if committed is Committed.PAUSED and not ends_run:
            await self._stop_paused()
        # A stop that came during the commit takes effect here: a workflow whose steps never
        # reach an unshielded checkpoint (fast async steps) would otherwise run on forever.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _stop_paused(self) -> NoReturn:
        """The execution was paused (zart.pause): what was just committed stays (the step that was
        running has its checkpoint); stop before anything else runs.

        The attempts whose start went with that commit never ran their step: they end `paused`,
        which counts neither as a failure nor as a crash. The task is handed back ready: no claim
        takes a paused execution's tasks, and unpausing makes it run on at once. Once per run:
        inline branches that hear of the pause together stop with the first.
        """
        if not self._paused:
            self._paused = True
            now = utcnow()
            message = "the execution was paused before this attempt's step ran"
            for key, attempt in self.in_flight.items():
                self.pending.attempt_ends.append((key, attempt, now, "paused", "Paused", message, None))
            self.in_flight.clear()
            await self.suspend(0.0)
        raise Suspended

    async def _commit_pending(self) -> Committed:
        fragment = self.pending
        if fragment.is_empty():
            return Committed.YES
        self.pending = self._new_fragment()
        return await self._completer.commit(fragment)  # not cancellable once handed over

    async def _commit_with_siblings(self) -> Committed:
        """A flush while inline branches run: the branches that flush in the same scheduling round
        (a window of them starting their attempts, several finishing) share one fragment, so a wave
        of N branches costs the completer one fragment, not N."""
        joined = self._round
        if joined is not None and not joined.taken:  # its fragment holds what we just recorded
            await joined.done.wait()  # not cancellable: the round's commit is ours too
            if joined.error is not None:
                raise joined.error
            return joined.committed
        round_ = self._round = _Round()
        try:
            # let the siblings that flush now join this round
            await trio.lowlevel.cancel_shielded_checkpoint()
            round_.taken = True
            round_.committed = await self._commit_pending()
        except BaseException as exc:
            round_.error = exc
            raise
        finally:
            round_.taken = True
            round_.done.set()
        return round_.committed

    async def suspend(self, delay: float) -> NoReturn:
        """Hand the task back to run again in `delay` seconds (never past the deadline), and stop."""
        if delay != math.inf:
            delay = min(delay, MAX_SECONDS)
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - trio.current_time()))
        self.pending.release_after = delay
        await self.flush()
        self._wake_claimer()
        raise Suspended

    async def suspend_as(self, status: str, delay: float, event: str | None = None) -> NoReturn:
        """Suspend a sleep (`sleeping`) or an event wait (`waiting`, woken early by its event)."""
        self.set_status(status)
        self.pending.wake_on_event = event
        await self.suspend(delay)

    async def finish(self, status: str, result: str | None, error: str | None) -> None:
        """End the execution with `status` (its result or error as JSON text): the run's last commit."""
        pending = self.pending
        pending.execution = (status, result, error, self.started_at, utcnow())
        pending.finish_execution = True
        pending.parent_id = self.parent_id
        pending.parent_inline = self.parent_inline
        pending.cancel_children = self.may_have_children and status != "completed"
        await self.flush()
        self.ended = (status, result, error)

    async def fail(self, error: BaseException) -> NoReturn:
        """End the execution `failed` with `error` from wherever it runs (a branch included), and stop."""
        await self.finish("failed", None, error_json(error))
        raise Suspended

    async def time_out(self, message: str) -> None:
        """End the execution `timed_out`; the attempts in flight, if any, are recorded as cut short."""
        for key, attempt in self.in_flight.items():
            self.pending.attempt_ends.append(
                (key, attempt, utcnow(), "timed_out", "WorkflowTimedOut", message, None)
            )
        self.pending.close_attempts = ("timed_out", "WorkflowTimedOut", message)
        error = orjson.dumps({"type": "WorkflowTimedOut", "message": message, "traceback": ""})
        await self.finish("timed_out", None, error.decode())
