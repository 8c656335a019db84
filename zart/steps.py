"""Step calls: their key and arguments, and running a step that has no checkpoint yet.

A step call inside a workflow becomes a `StepCall`, an awaitable whose checkpoint key is fixed when
it is created (so `zart.parallel(a(1), b(2))` keys its branches in argument order). Awaiting it
takes the next position in the history (`zart.history`): a recorded step returns its value without
running; a new one runs here, attempt by attempt.

Each attempt's start is committed before its body runs (together with the previous step's pending
checkpoint: one commit per step, see `zart.journal`), so every attempt that began is on record and a
crash re-runs the step in flight only. A failed attempt either parks the execution for its retry
back-off (a branch run inline, whose siblings still run, raises `RetryLater` instead: see
`zart.branches`) or, once the retry policy says no, becomes the step's failed checkpoint.

This is the hot path of the engine: one commit per step and nothing else to wait for, so nothing
here may add an await, a thread hop or a per-step allocation beyond the step's own records.
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import trio

from . import serde, tracing, transactional, worker_metrics
from .completer import CommitAbandoned, Fragment
from .current import Context, context_var, execution_var
from .errors import SerializationError, StepAbandoned, StepTimeout, ZartError
from .history import Checkpoint, recorded_value
from .journal import LeaseLost, error_record, utcnow

if TYPE_CHECKING:
    from .registry import Step
    from .replay import ExecutionContext


class RetryLater(Exception):
    """An inline branch's step failed and its policy retries it after `delay` seconds: the branch
    ends here, and the workflow suspends once its other branches are done."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class StepCall:
    """An awaitable step invocation inside a workflow; its key is fixed when it is created."""

    __slots__ = ("args", "execution", "key", "kwargs", "step")

    def __init__(
        self,
        execution: ExecutionContext,
        step: Step,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.execution = execution
        self.step = step
        self.key = key
        self.args = args
        self.kwargs = kwargs

    def __await__(self) -> Generator[Any, None, Any]:
        return run_step(self.execution, self).__await__()

    def __repr__(self) -> str:
        return f"<StepCall {self.key}>"


def make_call(
    execution: ExecutionContext, step: Step, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> StepCall:
    """Arguments are checked at the call and handed to the step as decoded JSON, so a step sees
    the same values whether it runs inline, in another process, or after a restart."""
    decoded_args = tuple(
        serde.roundtrip(arg, f"argument {index + 1} of step {key!r}")[1] for index, arg in enumerate(args)
    )
    decoded_kwargs = {
        name: serde.roundtrip(arg, f"argument {name!r} of step {key!r}")[1] for name, arg in kwargs.items()
    }
    return StepCall(execution, step, key, decoded_args, decoded_kwargs)


async def run_step(execution: ExecutionContext, call: StepCall) -> Any:
    """Awaiting a step call: its recorded outcome while replaying, else a run of the step."""
    position, recorded = execution.history.next_entry(call.key)
    if recorded is None:
        recorded = await attempt_step(execution, call, position)
    return recorded_value(recorded)


async def attempt_step(
    execution: ExecutionContext, call: StepCall, position: int, inline: bool = False
) -> Checkpoint:
    """Run a step that has no checkpoint (its retries included); its checkpoint, pending.

    The checkpoint is `completed`, or `failed` once the retries are spent (the workflow sees it as
    StepFailed). Raises Suspended when it parks the execution for a retry back-off or fails it (the
    poison-pill limit).

    `inline`: a branch run in this execution's nursery, whose retry back-off must not suspend the
    execution while its sibling branches run (it raises RetryLater instead).
    """
    await execution.until_due()
    key = call.key
    journal = execution.journal
    pending = journal.pending
    previous = execution.last_attempts.get(key)
    attempt, failures = 1, 0
    if previous is not None:
        attempt, failures = previous.attempt + 1, previous.failures
        if previous.still_open:
            pending.attempt_ends.append(
                (
                    key,
                    previous.attempt,
                    utcnow(),
                    "abandoned",
                    "WorkerLost",
                    "the worker running this attempt stopped (crash, kill or lost lease)",
                    None,
                )
            )
        limit = execution.services.max_abandoned
        if limit and previous.crashes >= limit:
            await journal.fail(
                StepAbandoned(
                    f"step {key!r} was abandoned {previous.crashes} times: each attempt's worker "
                    "died (crash, kill, out of memory or lost lease) before the attempt ended, so "
                    "the execution is failed rather than allowed to take more workers down "
                    f"(poison-pill limit max_abandoned={limit})"
                )
            )
    started = utcnow()
    if call.step.isolation is not None:
        return await _attempt_transaction(execution, call, position, attempt, failures, started, inline)
    pending.attempt_starts.append((key, attempt, started))
    journal.mark_running()
    # In flight from its commit on: a stop that comes right after it closes this attempt.
    journal.in_flight[key] = attempt
    await journal.flush()  # the attempt is on record before the step's side effects begin

    info = Context(execution.execution_id, execution.workflow_name, key, attempt)
    try:
        if tracing.active():
            with tracing.step_span(execution.execution_id, key, attempt):
                result = await _invoke(call, info, execution.services.step_limiter)
        else:
            result = await _invoke(call, info, execution.services.step_limiter)
        data = serde.dumps(result, f"the result of step {key!r}")
    except Exception as exc:
        del journal.in_flight[key]
        return await _failed(execution, call, position, attempt, failures + 1, started, exc, inline)
    del journal.in_flight[key]
    finished = utcnow()
    output = data.decode()
    pending = journal.pending
    pending.attempt_ends.append((key, attempt, finished, "succeeded", None, None, None))
    pending.steps.append((key, position, "step", "completed", output, None, attempt, started, finished, None))
    return Checkpoint(key, position, "completed", output, None)


async def _failed(
    execution: ExecutionContext,
    call: StepCall,
    position: int,
    attempt: int,
    failures: int,
    started: datetime,
    exc: Exception,
    inline: bool,
) -> Checkpoint:
    """A failed attempt (its end recorded): the step's retry back-off, or its failed checkpoint."""
    journal = execution.journal
    policy = call.step.retry
    _record_attempt_end(journal.pending, call.key, attempt, exc)
    # An unserialisable result fails the same way every time: no point retrying it.
    if not isinstance(exc, SerializationError) and policy.should_retry(failures, exc):
        delay = policy.delay_before_retry(failures)
        if inline:
            raise RetryLater(delay) from None
        await journal.suspend(delay)  # ends this run here
    return _record_failure(journal.pending, call.key, position, attempt, started, exc)


async def _attempt_transaction(
    execution: ExecutionContext,
    call: StepCall,
    position: int,
    attempt: int,
    failures: int,
    started: datetime,
    inline: bool,
) -> Checkpoint:
    """An attempt of a transactional step (zart.transactional): its body, checkpoint and attempt
    record committed in one transaction, or none of them. What was pending (the previous step's
    checkpoint) is committed first, so the history stays in the order the workflow ran it."""
    journal = execution.journal
    runner = execution.services.transactions
    if runner is None:
        raise ZartError(f"step {call.key!r} is transactional: it runs only in a worker")
    journal.mark_running()
    await journal.flush()
    step = call.step
    fence = transactional.Fence(
        execution.execution_id,
        journal.task_id,
        journal.claims,
        execution.services.worker_id,
        call.key,
        position,
        attempt,
        started,
    )
    info = Context(execution.execution_id, execution.workflow_name, call.key, attempt)
    body = partial(_in_context, info, step.fn)
    try:
        if tracing.active():
            with tracing.step_span(execution.execution_id, call.key, attempt):
                output = await runner.attempt(
                    fence, step.isolation, step.timeout, body, call.args, call.kwargs
                )
        else:
            output = await runner.attempt(fence, step.isolation, step.timeout, body, call.args, call.kwargs)
    except transactional.LeaseGone as exc:
        raise LeaseLost(str(exc)) from None
    except Exception as exc:
        if transactional.interrupted(exc):  # nothing of it is known: the next holder of the task sees
            raise CommitAbandoned(f"a transactional step's connection was lost: {exc}") from exc
        if isinstance(exc, transactional.TimeUp):
            exc = StepTimeout(
                f"attempt {attempt} of step {call.key!r} exceeded the step's timeout of {step.timeout:g} s"
            )
        # The attempt left nothing in the database: its record is written apart, started then ended.
        journal.pending.attempt_starts.append((call.key, attempt, started))
        await journal.flush()
        return await _failed(execution, call, position, attempt, failures + 1, started, exc, inline)
    if worker_metrics.enabled:
        worker_metrics.record_step("succeeded")
    return Checkpoint(call.key, position, "completed", output, None)


def _in_context(info: Context, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A transactional body, run in a thread with `zart.context()` set to its step and attempt."""
    token = context_var.set(info)
    execution_token = execution_var.set(None)  # a step called inside a step is plain
    try:
        return fn(*args, **kwargs)
    finally:
        execution_var.reset(execution_token)
        context_var.reset(token)


async def _invoke(call: StepCall, info: Context, limiter: trio.CapacityLimiter) -> Any:
    """Run the step's body once, bounded by its timeout (an abandoned thread for a sync step)."""
    step = call.step
    execution_token = execution_var.set(None)  # a step called inside a step is plain
    info_token = context_var.set(info)
    try:
        if step.timeout is None:  # no cancel scope of its own: a step without a timeout is the norm
            return await _body(call, limiter)
        with trio.move_on_after(step.timeout) as scope:
            return await _body(call, limiter)
        assert scope.cancelled_caught
        raise StepTimeout(
            f"attempt {info.attempt} of step {info.step_key!r} exceeded the step's timeout "
            f"of {step.timeout:g} s"
        )
    finally:
        context_var.reset(info_token)
        execution_var.reset(execution_token)


async def _body(call: StepCall, limiter: trio.CapacityLimiter) -> Any:
    step = call.step
    if step.is_async:
        return await step.fn(*call.args, **call.kwargs)
    return await trio.to_thread.run_sync(
        partial(contextvars.copy_context().run, step.fn, *call.args, **call.kwargs),
        limiter=limiter,
        abandon_on_cancel=True,
    )


def _record_attempt_end(pending: Fragment, key: str, attempt: int, exc: BaseException) -> None:
    record = error_record(exc)
    outcome = "timed_out" if isinstance(exc, StepTimeout) else "failed"
    pending.attempt_ends.append(
        (key, attempt, utcnow(), outcome, record["type"], record["message"], record["traceback"])
    )


def _record_failure(
    pending: Fragment, key: str, position: int, attempt: int, started: datetime, exc: BaseException
) -> Checkpoint:
    """The step's final failure: its checkpoint (the workflow sees it as StepFailed)."""
    error = orjson.dumps(error_record(exc)).decode()
    pending.steps.append((key, position, "step", "failed", None, error, attempt, started, utcnow(), None))
    return Checkpoint(key, position, "failed", None, error)
