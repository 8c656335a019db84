"""Fan-out: `zart.parallel` and `zart.map`, and running one of their branches.

The branches of a fan-out take consecutive positions in the history, and run one of two ways.

Inline, when at most `Services.inline_fanout` would run at once (and the worker is not draining): in this
execution's own nursery, each branch's step run like an inline step (`zart.steps`), their flushes
coalesced (`zart.journal`). A branch whose step is to be retried ends without its checkpoint, and
once its siblings are done the execution suspends for the earliest back-off.

As branch tasks otherwise: the first time through, the unfinished branches become tasks (kind
'step', at most `concurrency` of them ready, the rest parked) in the same transaction that parks the
workflow; any worker may claim them. Each branch task runs its step, with its retries, and commits
its checkpoint together with the fan-in (the next parked branch of the group made ready, the
workflow woken by the last one).

Either way, the replay then finds every branch's outcome in the history.

A branch may also be a child execution (`ChildCall`, made by `zart.child` and `zart.map` over a
workflow: zart.children): it is recorded as a `waiting` entry and started in the commit that records
it (at most `concurrency` of a fan-out's children ready, the others parked until a sibling ends),
and the workflow parks until no child or branch task is left; each child's final transaction records
its outcome in that entry and wakes the parent (sql.FINISH_CHILDREN).

How branches are run is kept here, apart from the steps and the replay, so that it can change
without touching them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import orjson
import trio

from . import serde
from .completer import CommitAbandoned, Fragment, FragmentRejected
from .current import require_execution
from .errors import StepFailed
from .history import Checkpoint, recorded_value
from .journal import LeaseLost, Suspended, utcnow
from .steps import RetryLater, StepCall, attempt_step, make_call

if TYPE_CHECKING:
    from .registry import Step
    from .replay import ExecutionContext


@runtime_checkable
class StepDefinition(Protocol):
    """What `zart.map` needs of a `@zart.step` (zart.registry.Step), without importing the registry:
    the registry is a layer above the replay (it imports zart.replay), and the dependency goes one
    way only."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    timeout: float | None
    retry: Any


@attrs.define
class ChildRun:
    """A child this worker claimed in its parent's commit and runs at once (Services.start_child):
    set `done` when its runner ends, with `outcome` = (status, result, error) if it ended there
    (None: it parked, was lost or stopped, and its end will reach the parent through the database)."""

    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: tuple[str, str | None, str | None] | None = None


class ChildCall:
    """An awaitable child execution inside a workflow (`zart.child`); its key is fixed when it is
    created, like a step call's, and so is everything its start needs (checked at the call)."""

    __slots__ = ("execution", "key", "queue_declaration", "start")

    def __init__(
        self,
        execution: ExecutionContext,
        key: str,
        start: tuple[Any, ...],
        queue_declaration: tuple[Any, ...] | None,
    ) -> None:
        self.execution = execution
        self.key = key  # `child:NAME#k`, or `child:NAME[i]` for an item of a zart.map
        # (id, workflow, input as JSON text, timeout, queue, queue key, priority, trace context)
        self.start = start
        # (queue, concurrency, per_key, rate limit, rate period): the queue to create if it is new
        self.queue_declaration = queue_declaration

    @property
    def child_id(self) -> str:
        return self.start[0]

    def __await__(self) -> Any:
        return _one(self).__await__()

    def __repr__(self) -> str:
        return f"<ChildCall {self.key} -> {self.child_id!r}>"


async def _one(call: ChildCall) -> Any:
    (result,) = await fan_out(call.execution, [call], None)
    return result


def check_concurrency(concurrency: Any) -> None:
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ValueError(f"concurrency must be a whole number >= 1 or None, got {concurrency!r}")


async def parallel(*calls: StepCall | ChildCall) -> list[Any]:
    """Run step calls concurrently, on any worker; their results in argument order.

    Each branch is checkpointed on its own, so a restart re-runs only the unfinished ones. If some
    fail (after their retries), StepFailed for the first failure in argument order is raised once
    all are finished, with every branch's outcome in its `outcomes`.
    """
    execution = require_execution("zart.parallel()")
    if not calls:
        return []
    return await fan_out(execution, list(calls), None)


async def map(step: Step, items: Any, concurrency: int | None = None) -> list[Any]:
    """A durable loop: `step(item)` for each item, one checkpoint per item (`name[i]`), at most
    `concurrency` in flight, results in item order. A restart skips the finished items."""
    execution = require_execution("zart.map()")
    if not isinstance(step, StepDefinition):
        raise TypeError(f"zart.map() takes a @zart.step function, got {step!r}")
    check_concurrency(concurrency)
    calls = _map_calls(execution, step, list(items))
    if not calls:
        return []
    return await fan_out(execution, calls, concurrency)


def _map_calls(execution: ExecutionContext, step: Step, items: list[Any]) -> list[StepCall]:
    """One call per item: a checkpoint per item, keyed `name[i]` (`name#k[i]` for the k-th map of
    the same step in this execution, k >= 2)."""
    count = execution.history.count_call("map", step.name)
    prefix = step.name if count == 1 else f"{step.name}#{count}"
    return [make_call(execution, step, f"{prefix}[{index}]", (item,), {}) for index, item in enumerate(items)]


async def fan_out(
    execution: ExecutionContext, calls: list[StepCall | ChildCall], concurrency: int | None
) -> list[Any]:
    """Run `calls` inline, or as branch tasks any worker may claim; their results in argument order.

    As tasks, the unfinished branches become tasks in the commit that parks this workflow; the last
    branch to finish wakes it, and the replay then finds every result here. Child calls start in
    the first commit, and the workflow parks until every child has ended.
    """
    for call in calls:
        if not isinstance(call, (StepCall, ChildCall)) or call.execution is not execution:
            raise TypeError(
                f"zart.parallel() takes step calls and zart.child() calls made in this workflow, e.g. "
                f"zart.parallel(a(1), b(2)); got {call!r}"
            )
    history, journal = execution.history, execution.journal
    first = history.take_positions(len(calls))
    recorded = [history.entry_at(first + offset, call.key) for offset, call in enumerate(calls)]
    unfinished = [
        (offset, call)
        for offset, call in enumerate(calls)
        if recorded[offset] is None and isinstance(call, StepCall)
    ]
    new_children = [
        (offset, call)
        for offset, call in enumerate(calls)
        if recorded[offset] is None and isinstance(call, ChildCall)
    ]
    children_waiting = any(
        checkpoint is not None and checkpoint.kind == "child" and checkpoint.status == "waiting"
        for checkpoint in recorded
    )
    runs: list[tuple[int, ChildCall, ChildRun]] = []
    if new_children:
        await execution.until_due()
        lease = _inline_lease(execution, new_children, concurrency)
        fragment = _start_children(execution, first, new_children, concurrency, lease)
        if lease is not None:  # the children exist, claimed by this worker, from this commit on
            journal.mark_running()
            await journal.flush()
            claimed = fragment.claimed_children or {}
            runs = _run_claimed(execution, claimed, new_children)
            left = [(offset, call) for offset, call in new_children if call.child_id not in claimed]
            if left:  # taken ids, or queues with limits the database knows: START_CHILDREN decides
                _start_children(execution, first, left, None, None, record=False)
                await journal.flush()
    if new_children or children_waiting:
        journal.may_have_children = True
    window = len(unfinished) if concurrency is None else min(concurrency, len(unfinished))
    services = execution.services
    if unfinished and window <= services.inline_fanout and services.may_inline():
        await _run_inline(execution, first, unfinished, window, recorded)
    elif unfinished:
        await execution.until_due()
        for rank, (offset, call) in enumerate(unfinished):
            payload = orjson.dumps({"step": call.step.name, "args": call.args, "kwargs": call.kwargs})
            journal.pending.branch_tasks.append(
                (call.key, payload.decode(), first + offset, first, rank < window)
            )
        journal.mark_running()
        journal.pending.wake_when_branches_done = True
        await journal.suspend(math.inf)
    if runs:
        await _await_children(execution, first, runs, recorded)
    if any(
        isinstance(call, ChildCall) and (recorded[offset] is None or recorded[offset].status == "waiting")
        for offset, call in enumerate(calls)
    ):
        # parked until no child (and no branch task) is left: the last child's end wakes it
        journal.set_status("waiting")
        journal.pending.wake_when_branches_done = True
        await journal.suspend(math.inf)
    outcomes = []
    failure: StepFailed | None = None
    for checkpoint in recorded:
        assert checkpoint is not None
        try:
            outcomes.append(
                {"key": checkpoint.key, "status": "completed", "result": recorded_value(checkpoint)}
            )
        except StepFailed as failed:
            outcomes.append(
                {
                    "key": checkpoint.key,
                    "status": "failed",
                    "error_type": failed.error_type,
                    "message": failed.message,
                }
            )
            failure = failure or failed
    if failure is not None:
        failure.outcomes = outcomes
        raise failure
    return [outcome["result"] for outcome in outcomes]


def _inline_lease(
    execution: ExecutionContext, new: list[tuple[int, ChildCall]], concurrency: int | None
) -> float | None:
    """The lease to claim the children with for this worker, which runs them at once, or None: they
    go through the claim. At once when the worker can (not draining), the fan-out is narrow (at most
    `inline_fanout`, and no `concurrency` window) and no child's queue has limits (their admission is
    the claim's; START_CHILDREN also checks the queues the database knows)."""
    services = execution.services
    if (
        services.child_lease is None
        or services.start_child is None
        or len(new) > services.inline_fanout
        or (concurrency is not None and concurrency < len(new))
        or not services.may_inline()
    ):
        return None
    for _, call in new:
        declared = call.queue_declaration
        if declared is not None and any(limit is not None for limit in declared[1:]):
            return None
    return services.child_lease


def _run_claimed(
    execution: ExecutionContext, claimed: dict[str, int], new: list[tuple[int, ChildCall]]
) -> list[tuple[int, ChildCall, ChildRun]]:
    """Start a runner for each child claimed for this worker; the parent's id is the child's parent."""
    start_child = execution.services.start_child
    assert start_child is not None
    runs = []
    for offset, call in new:
        task_id = claimed.get(call.child_id)
        if task_id is not None:
            child_id, workflow, input_json, timeout = call.start[:4]
            run = start_child(
                child_id, workflow, task_id, input_json, timeout, execution.execution_id, call.start[7]
            )
            runs.append((offset, call, run))
    return runs


async def _await_children(
    execution: ExecutionContext,
    first: int,
    runs: list[tuple[int, ChildCall, ChildRun]],
    recorded: list[Checkpoint | None],
) -> None:
    """Wait in memory, up to `child_wait`, for the children this worker runs; the outcome of each
    that ended is its entry, as its final commit recorded it in the database (sql.FINISH_CHILDREN)."""
    with trio.move_on_after(execution.services.child_wait):
        for _, _, run in runs:
            await run.done.wait()
    for offset, call, run in runs:
        if run.done.is_set() and run.outcome is not None:
            recorded[offset] = _child_checkpoint(call, first + offset, *run.outcome)


def _child_checkpoint(
    call: ChildCall, position: int, status: str, result: str | None, error: str | None
) -> Checkpoint:
    """The parent's entry for a child that ended: what sql.FINISH_CHILDREN writes (_CHILD_FAILURE)."""
    if status == "completed":
        return Checkpoint(call.key, position, "completed", result, None, "child")
    child_error = serde.loads(error)
    message = f"child execution {call.child_id} {status.replace('_', ' ')}"
    if child_error and child_error.get("type") is not None and child_error.get("message") is not None:
        message += f": {child_error['type']}: {child_error['message']}"
    record = {
        "type": "ChildFailed",
        "message": message,
        "traceback": (child_error or {}).get("traceback") or "",
        "child_id": call.child_id,
        "child_status": status,
        "child_error": child_error,
    }
    return Checkpoint(call.key, position, "failed", None, orjson.dumps(record).decode(), "child")


def _start_children(
    execution: ExecutionContext,
    first: int,
    new: list[tuple[int, ChildCall]],
    concurrency: int | None,
    lease: float | None,
    record: bool = True,
) -> Fragment:
    """Record the children's `waiting` entries and their starts, for the next commit (the fragment
    returned): the first `concurrency` of them ready, the others parked until a sibling ends, or
    all claimed for this worker with `lease` (sql.START_CHILDREN)."""
    pending = execution.journal.pending
    pending.child_lease = lease
    starts = pending.child_starts = list(pending.child_starts)
    queues = pending.child_queues = list(pending.child_queues)
    window = len(new) if concurrency is None else min(concurrency, len(new))
    now = utcnow()
    for offset, call in new:
        position = first + offset
        if record:  # (their entries are recorded once, with the first attempt to start them)
            pending.steps.append((call.key, position, "child", "waiting", None, None, 0, now, None, None))
        starts.append((*call.start, call.key, first, position, window))
        if call.queue_declaration is not None:
            queues.append(call.queue_declaration)
    return pending


async def _run_inline(
    execution: ExecutionContext,
    first: int,
    unfinished: list[tuple[int, StepCall]],
    window: int,
    recorded: list[Checkpoint | None],
) -> None:
    """Run the branches here, at most `window` at once, each step as an inline step is run: its
    attempt on record before its body, its checkpoint committed at once if a sibling's body is
    still running (else with the workflow's next commit), all through the completer.

    A branch whose step is to be retried ends without its checkpoint; once the others are done
    the execution suspends until the earliest retry is due, and the replay runs what is left. If
    the execution ends or is lost in a branch (the poison-pill limit, a lost lease, a commit
    refused or abandoned), the other branches are cancelled and that end is raised.
    """
    journal = execution.journal
    # a limiter only when the window is narrower than the fan-out (it costs each branch a few
    # scheduling rounds; the common zart.parallel of a few calls needs none)
    limiter = trio.CapacityLimiter(window) if window < len(unfinished) else contextlib.nullcontext()
    retries: list[float] = []
    ended: list[BaseException] = []
    journal.inline_branches += 1

    async def branch(offset: int, call: StepCall, cancel_scope: trio.CancelScope) -> None:
        async with limiter:
            try:
                try:
                    recorded[offset] = await attempt_step(execution, call, first + offset, inline=True)
                except RetryLater as later:
                    retries.append(later.delay)
                # What this branch recorded may wait for the execution's next commit only while
                # nothing with side effects runs; a sibling's step body does: commit it now.
                if journal.in_flight:
                    await journal.flush()
            except (Suspended, LeaseLost, FragmentRejected, CommitAbandoned) as exc:
                # An end of the whole run: raised once, as the runner knows it (not inside an
                # exception group that nothing above would recognise).
                ended.append(exc)
                cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for offset, call in unfinished:
                nursery.start_soon(branch, offset, call, nursery.cancel_scope)
    finally:
        journal.inline_branches -= 1
    if ended:
        raise ended[0]
    if retries:
        await journal.suspend(min(retries))


async def run_branch(execution: ExecutionContext, call: StepCall, position: int, group: int) -> None:
    """Run one branch task: the step (with its retries), then the fan-in, in one commit.

    A branch whose checkpoint already exists (its task was re-created by a replay that loaded
    the history just before the branch finished) does not run again: only the fan-in remains.
    """
    recorded = execution.history.entries.get(position)
    try:
        if recorded is None:
            await attempt_step(execution, call, position)  # a failure is recorded for the fan-in
    except Suspended:
        return  # a retry back-off: this branch task runs again later
    journal = execution.journal
    journal.pending.finish_task = True
    journal.pending.fan_in_group = group
    await journal.flush()
