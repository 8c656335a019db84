"""Running one execution: replaying its history, then running new steps.

A workflow body is ordinary async code. While it is behind its history (it is replaying after a
restart), its step calls return the recorded values without running anything; once it is past the
history, steps run for real, and each step costs one commit.

`ExecutionContext` is one execution while a worker runs it. It runs the body and composes the parts
that each do one job:

* `zart.history`: the recorded entries, positions and keys, and the determinism check;
* `zart.journal`: the writes not yet committed, and the commits that park or end the run;
* `zart.steps`: step calls, and running a step that has no checkpoint (attempts, retries);
* `zart.waits`: `zart.sleep` and `zart.wait_for_event`;
* `zart.emitting`: `zart.emit`, values appended to the execution's streams;
* `zart.patches`: `zart.patched` and `zart.deprecate_patch`, for changing code under executions in flight;
* `zart.branches`: `zart.parallel` and `zart.map`, and running one of their branch tasks;
* `zart.current`: which execution and step the running code belongs to (`zart.context()`).

This module is also what the rest of the package (the worker, the registry, the public API) imports
of them: those modules are the replay's own parts, and may change shape without their users noticing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import serde
from .branches import ChildRun, map, parallel, run_branch
from .completer import Completer
from .current import Context, context, context_var, current_execution, execution_var
from .emitting import emit
from .errors import SerializationError
from .history import Checkpoint, History, LastAttempt, PendingEvent
from .journal import Journal, LeaseLost, Suspended, error_json, error_record, utcnow
from .patches import deprecate_patch, patched
from .steps import StepCall, make_call
from .waits import sleep, wait_for_event

if TYPE_CHECKING:
    from .registry import Step, Workflow

__all__ = [
    "Checkpoint",
    "ChildRun",
    "Context",
    "ExecutionContext",
    "LastAttempt",
    "LeaseLost",
    "PendingEvent",
    "Services",
    "StepCall",
    "Suspended",
    "context",
    "current_execution",
    "deprecate_patch",
    "emit",
    "error_json",
    "error_record",
    "map",
    "parallel",
    "patched",
    "run_branch",
    "sleep",
    "utcnow",
    "wait_for_event",
]


@attrs.frozen
class Services:
    """What an execution needs from its worker."""

    completer: Completer
    step_limiter: trio.CapacityLimiter
    worker_id: str
    wake_claimer: Callable[[], None]  # called after a reschedule, so the worker's timer sees it
    # The poison-pill limit: a step whose attempts died with their worker this many times fails
    # its execution instead of being tried again (None: no limit).
    max_abandoned: int | None = 3
    # zart.parallel / zart.map run their branches inline, in this execution's own nursery, when at
    # most this many would run at once and `may_inline()` agrees (not while draining); wider fan-outs
    # become branch tasks that any worker may claim (zart.branches). 0: always tasks.
    inline_fanout: int = 32
    may_inline: Callable[[], bool] = lambda: True
    # Children run at once by this worker (zart.children): their lease, and what starts one (the
    # runner's); None: children always go through the claim. A parent waits for them in memory, its
    # slot held, for at most `child_wait` seconds, then parks.
    child_lease: float | None = None
    start_child: Callable[..., ChildRun] | None = None
    child_wait: float = 1.0
    # Transactional steps' connections (zart.transactional.TransactionRunner); None: not in a worker.
    transactions: Any = None


class ExecutionContext:
    """One execution while a worker runs it: its state, and the run of its workflow body.

    The steps, waits and fan-outs are functions of their own modules that take the execution and
    use its parts (`history`, `journal`, `last_attempts`, `events`, `services`); this class only
    holds them together and runs the body, so that each job can change without the others.
    """

    def __init__(
        self,
        *,
        execution_id: str,
        workflow_name: str,
        workflow: Workflow | None,
        task_id: int,
        claims: int,
        history: list[Checkpoint],
        last_attempts: dict[str, LastAttempt],
        services: Services,
        status: str = "pending",
        deadline: float | None = None,
        events: list[PendingEvent] | None = None,
        claimed_at: float | None = None,
        due_at: float | None = None,
        parent_id: str | None = None,
        parent_inline: bool = False,
    ) -> None:
        self.execution_id = execution_id
        self.workflow_name = workflow_name
        self.workflow = workflow  # None in a branch task run by a worker without the workflow
        # trio's clock at the claim (now, if not given): the history's wait deadlines count from there
        claimed_at = trio.current_time() if claimed_at is None else claimed_at
        self.history = History(execution_id, history, claimed_at)
        self.last_attempts = last_attempts
        self.services = services
        self.deadline = deadline  # trio clock; the workflow's timeout measured from its start
        self.events = list(events or ())  # delivered and not consumed yet, oldest first
        self._due_at = due_at  # trio clock: the moment of a timer claimed ahead, until it comes
        self.journal = Journal(
            execution_id=execution_id,
            task_id=task_id,
            claims=claims,
            completer=services.completer,
            wake_claimer=services.wake_claimer,
            status=status,
            deadline=deadline,
            parent_id=parent_id,
            parent_inline=parent_inline,
        )

    @property
    def in_flight(self) -> dict[str, int]:
        """Step key -> attempt, of the steps running right now (several: inline branches), which a
        stop records as cut short."""
        return self.journal.in_flight

    async def until_due(self) -> None:
        """Wait for the moment of a timer claimed ahead (a sleep's end, a retry's back-off), once.

        The claim took the task up to a lookahead early and the replay ran at once (it is
        deterministic and has no effects); what depends on the clock (a sleep's check) or has an
        effect (a step's attempt, a commit) calls this first. So at the moment, only the few
        microseconds from the wait to the next step's start remain: a thousand timers due at once
        start within milliseconds of it, not a thousand replays later.
        """
        if self._due_at is not None:
            due, self._due_at = self._due_at, None
            await trio.sleep_until(due)

    def call_step(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepCall:
        """What calling a `@zart.step` inside this execution's body returns."""
        return make_call(self, step, self.history.next_key("step", step.name), args, kwargs)

    async def run(self, input_json: str | None) -> None:
        """Run (or resume) the workflow body until it ends, suspends, or its deadline passes."""
        deadline = math.inf if self.deadline is None else self.deadline
        if trio.current_time() >= deadline:
            await self._time_out()
            return
        with trio.move_on_at(deadline) as scope, contextlib.suppress(Suspended):
            await self._run_body(input_json)
        # A deadline that passed while the commit that parked the execution ran (a sleep cut short
        # by the deadline, on a loaded machine) is not this run's to act on: the task was handed
        # back to run at the deadline, and that run ends the execution.
        if scope.cancelled_caught and not self.journal.handed_back:
            await self._time_out()

    async def call_body(self, input_json: str | None) -> tuple[Any, Exception | None]:
        """Run the workflow body as this execution (its durable calls go through this history and
        journal): its result, or the exception it raised.

        Only the body: what its end means (a commit, a verdict of `zart replay-check`) is the caller's.
        """
        workflow = self.workflow
        assert workflow is not None
        execution_token = execution_var.set(self)
        info_token = context_var.set(Context(self.execution_id, workflow.name))
        try:
            value = serde.loads(input_json)
            coroutine = workflow.fn(value) if workflow.takes_input else workflow.fn()
            return await coroutine, None
        except Exception as exc:
            return None, exc
        finally:
            context_var.reset(info_token)
            execution_var.reset(execution_token)

    async def _run_body(self, input_json: str | None) -> None:
        workflow = self.workflow
        assert workflow is not None
        journal = self.journal
        result, failure = await self.call_body(input_json)
        await self.until_due()  # the end is an effect too (a timer's replay can end the execution)
        # A divergence fails the execution even when the workflow caught it, and so does history
        # the body never reached (code that lost steps would otherwise end "completed").
        divergence = self.history.nondeterminism or self.history.unreached()
        if divergence is not None:
            await journal.finish("failed", None, error_json(divergence))
            return
        if failure is not None:
            await journal.finish("failed", None, error_json(failure))
            return
        try:
            data = serde.dumps(result, f"the result of workflow {workflow.name!r}")
        except SerializationError as exc:
            await journal.finish("failed", None, error_json(exc))
            return
        await journal.finish("completed", data.decode(), None)

    async def _time_out(self) -> None:
        """End the execution `timed_out`, saying which timeout it exceeded."""
        message = "the execution exceeded its workflow timeout"
        if self.workflow is not None and self.workflow.timeout is not None:
            message += f" of {self.workflow.timeout:g} s"
        # A timeout found at the claim comes before the replay: the history says if children run.
        if any(entry.kind == "child" for entry in self.history.entries.values()):
            self.journal.may_have_children = True
        await self.journal.time_out(message)
