"""Running one execution: replaying its checkpoints, then running new steps.

A workflow body is ordinary async code. Each step call gets a checkpoint key (`name#k`, the k-th call
of that step in the execution) and a position in the history. While the body is behind its history
(it is replaying after a restart), step calls return the recorded values without running anything;
once it is past the history, steps run for real.

Writes are deferred so that each step costs one commit: when a step finishes, its checkpoint is kept
pending while the (deterministic, side-effect free) workflow code runs on to its next step call; the
pending checkpoint and the record of the next attempt's start are then committed in ONE transaction,
before the next step's body runs. The step in flight is therefore the only one that can run again
after a crash, and every attempt that started is on record.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import traceback as traceback_module
from collections import defaultdict
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

import attrs
import orjson
import trio

from . import serde
from .completer import Completer, Fragment
from .durations import MAX_SECONDS
from .errors import (
    EventTimeout,
    NonDeterminismError,
    SerializationError,
    StepAbandoned,
    StepFailed,
    StepTimeout,
    ZartError,
)
from .names import check_name

if TYPE_CHECKING:
    from .registry import Step, Workflow

_current_execution: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "zart_execution", default=None
)
_current_info: contextvars.ContextVar[Context | None] = contextvars.ContextVar("zart_context", default=None)


# Sleep and event names become checkpoint keys, like step names (registry: at most 200 characters).
MAX_WAIT_NAME_LENGTH = 200


@runtime_checkable
class StepDefinition(Protocol):
    """What replay needs of a `@zart.step` (zart.registry.Step), without importing the registry:
    the registry imports this module, and the dependency goes one way only."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    timeout: float | None
    retry: Any


def current_execution() -> ExecutionContext | None:
    """The execution whose workflow body is running in this task, if any."""
    return _current_execution.get()


@attrs.frozen
class Context:
    """What `zart.context()` returns: where the running code is, durably speaking."""

    execution_id: str
    workflow: str
    step_key: str | None = None
    attempt: int | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and restarts of one step: pass it to payment APIs and the like."""
        if self.step_key is None:
            return self.execution_id
        return f"{self.execution_id}/{self.step_key}"


def context() -> Context:
    """The current execution, step key, attempt and idempotency key (inside a workflow or step)."""
    info = _current_info.get()
    if info is None:
        raise ZartError("zart.context() is only available inside a workflow or step run by Zart")
    return info


class LeaseLost(BaseException):
    """This worker no longer holds the execution's task: stop without writing anything.

    A BaseException so that a workflow's `except Exception:` cannot swallow it.
    """


class _RetryLater(Exception):
    """An inline branch's step failed and its policy retries it after `delay` seconds: the branch
    ends here, and the workflow suspends once its other branches are done."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class Suspended(BaseException):
    """The execution was rescheduled in the database (a retry back-off, a sleep): stop running it here.

    A BaseException for the same reason as LeaseLost; the runner treats it as a normal end.
    """


@attrs.frozen
class Checkpoint:
    """One recorded history entry: a step, a sleep or an event wait."""

    key: str
    seq: int
    status: str  # completed | failed | waiting (a sleep or event wait not over yet)
    output: str | None
    error: str | None
    kind: str = "step"
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
    # most this many would run at once and `may_inline()` says the worker has room; wider fan-outs
    # become branch tasks that any worker may claim. 0: always tasks.
    inline_fanout: int = 32
    may_inline: Callable[[], bool] = lambda: True


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
        return self.execution.run_step(self).__await__()

    def __repr__(self) -> str:
        return f"<StepCall {self.key}>"


def _recorded_value(recorded: Checkpoint) -> Any:
    """A step's recorded result, or its recorded failure raised again."""
    if recorded.status == "completed":
        return serde.loads(recorded.output)
    error = serde.loads(recorded.error) or {}
    raise StepFailed(
        recorded.key,
        error.get("type", "Error"),
        error.get("message", ""),
        error.get("traceback", ""),
    )


@attrs.define
class _Round:
    """One commit shared by the inline branches that flush in the same scheduling round."""

    taken: bool = False  # its fragment was handed to the completer: later writes need a new round
    done: trio.Event = attrs.field(factory=trio.Event)
    committed: bool = False
    error: BaseException | None = None


class ExecutionContext:
    """The state of one execution while a worker runs it."""

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
    ) -> None:
        self.execution_id = execution_id
        self.workflow_name = workflow_name
        self.workflow = workflow  # None in a branch task run by a worker without the workflow
        self.task_id = task_id
        self.claims = claims
        self.history = {checkpoint.seq: checkpoint for checkpoint in history}
        self._recorded_positions = {checkpoint.key: checkpoint.seq for checkpoint in history}
        self.last_attempts = last_attempts
        self.services = services
        self.nondeterminism: NonDeterminismError | None = None
        self.deadline = deadline  # trio clock; the workflow's timeout measured from its start
        # step key -> attempt, of the steps running right now (several: inline branches)
        self.in_flight: dict[str, int] = {}
        self._status = status  # the execution's status as last written
        # trio's clock at the claim: the history's wait deadlines (`wake_in`) count from there
        self._claimed_at = trio.current_time() if claimed_at is None else claimed_at
        self._events = list(events or ())
        self._started_at = utcnow()
        self._position = 0
        self._calls: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._pending = self._new_fragment()
        self._inline_branches = 0  # zart.parallel/map calls running their branches here right now
        self._round: _Round | None = None  # the flush that sibling branches may join

    def _new_fragment(self) -> Fragment:
        return Fragment(self.execution_id, self.task_id, self.claims)

    # -- step calls -------------------------------------------------------------------------------

    def _next_key(self, kind: str, name: str) -> str:
        """`name#k` for the k-th step `name`; sleeps and waits get their own `sleep:`/`event:` keys."""
        self._calls[(kind, name)] += 1
        count = self._calls[(kind, name)]
        return f"{name}#{count}" if kind == "step" else f"{kind}:{name}#{count}"

    def _next_entry(self, key: str) -> tuple[int, Checkpoint | None]:
        """This call's position, and what the history recorded there (None: nothing yet)."""
        position = self._position
        self._position += 1
        return position, self._entry_at(position, key)

    def _entry_at(self, position: int, key: str) -> Checkpoint | None:
        if self.nondeterminism is not None:
            # The workflow caught the error and went on: nothing durable may happen past a
            # divergence, so every later step, sleep, wait or fan-out raises it again.
            raise self.nondeterminism
        recorded = self.history.get(position)
        elsewhere = self._recorded_positions.get(key)
        if (recorded is not None and recorded.key != key) or (elsewhere not in (None, position)):
            found = recorded.key if recorded is not None else "nothing"
            self.nondeterminism = NonDeterminismError(
                f"execution {self.execution_id!r}: replay reached {key!r} at position {position + 1}, "
                f"but the history recorded {found!r} there; the workflow's code changed its "
                "steps since this execution started"
            )
            raise self.nondeterminism
        return recorded

    def _remaining(self, recorded: Checkpoint) -> float:
        """Seconds left before a recorded wait's deadline (inf when it has none)."""
        if recorded.wake_in is None:
            return math.inf
        return recorded.wake_in - (trio.current_time() - self._claimed_at)

    def call_step(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepCall:
        key = self._next_key("step", step.name)
        return self._make_call(step, key, args, kwargs)

    def _make_call(self, step: Step, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepCall:
        """Arguments are checked at the call and handed to the step as decoded JSON, so a step sees
        the same values whether it runs inline, in another process, or after a restart."""
        decoded_args = tuple(
            serde.roundtrip(arg, f"argument {index + 1} of step {key!r}")[1] for index, arg in enumerate(args)
        )
        decoded_kwargs = {
            name: serde.roundtrip(arg, f"argument {name!r} of step {key!r}")[1]
            for name, arg in kwargs.items()
        }
        return StepCall(self, step, key, decoded_args, decoded_kwargs)

    async def run_step(self, call: StepCall) -> Any:
        position, recorded = self._next_entry(call.key)
        if recorded is None:
            recorded = await self._attempt_step(call, position)
        return _recorded_value(recorded)

    # -- fan-out: zart.parallel and zart.map --------------------------------------------------------

    async def parallel(self, calls: list[StepCall], concurrency: int | None) -> list[Any]:
        """Run `calls` as branch tasks any worker may claim; their results in argument order.

        The branches take consecutive positions in the history. The first time through, the
        unfinished ones become tasks (at most `concurrency` ready, the rest parked) in the same
        transaction that parks this workflow; the last branch to finish wakes it, and the replay
        then finds every result here.
        """
        for call in calls:
            if not isinstance(call, StepCall) or call.execution is not self:
                raise TypeError(
                    f"zart.parallel() takes step calls made in this workflow, e.g. "
                    f"zart.parallel(a(1), b(2)); got {call!r}"
                )
        first = self._position
        self._position += len(calls)
        recorded = [self._entry_at(first + offset, call.key) for offset, call in enumerate(calls)]
        unfinished = [(offset, call) for offset, call in enumerate(calls) if recorded[offset] is None]
        window = len(unfinished) if concurrency is None else min(concurrency, len(unfinished))
        if unfinished and window <= self.services.inline_fanout and self.services.may_inline():
            await self._run_inline(first, unfinished, window, recorded)
        elif unfinished:
            for rank, (offset, call) in enumerate(unfinished):
                payload = orjson.dumps({"step": call.step.name, "args": call.args, "kwargs": call.kwargs})
                self._pending.branch_tasks.append(
                    (call.key, payload.decode(), first + offset, first, rank < window)
                )
            self._mark_running()
            self._pending.wake_when_branches_done = True
            await self.suspend(math.inf)
        outcomes = []
        failure: StepFailed | None = None
        for checkpoint in recorded:
            assert checkpoint is not None
            try:
                outcomes.append(
                    {"key": checkpoint.key, "status": "completed", "result": _recorded_value(checkpoint)}
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

    async def _run_inline(
        self,
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
        the execution ends or is lost in a branch (the poison-pill limit, a lost lease), the other
        branches are cancelled and that end is raised.
        """
        limiter = trio.CapacityLimiter(window)
        retries: list[float] = []
        ended: list[BaseException] = []
        self._inline_branches += 1

        async def branch(offset: int, call: StepCall, cancel_scope: trio.CancelScope) -> None:
            async with limiter:
                try:
                    try:
                        recorded[offset] = await self._attempt_step(call, first + offset, inline=True)
                    except _RetryLater as later:
                        retries.append(later.delay)
                    # What this branch recorded may wait for the execution's next commit only while
                    # nothing with side effects runs; a sibling's step body does: commit it now.
                    if self.in_flight:
                        await self.flush()
                except (Suspended, LeaseLost) as exc:
                    ended.append(exc)
                    cancel_scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                for offset, call in unfinished:
                    nursery.start_soon(branch, offset, call, nursery.cancel_scope)
        finally:
            self._inline_branches -= 1
        if ended:
            raise ended[0]
        if retries:
            await self.suspend(min(retries))

    def map_calls(self, step: Step, items: list[Any]) -> list[StepCall]:
        """One call per item: a checkpoint per item, keyed `name[i]` (`name#k[i]` for the k-th map of
        the same step in this execution, k >= 2)."""
        self._calls[("map", step.name)] += 1
        count = self._calls[("map", step.name)]
        prefix = step.name if count == 1 else f"{step.name}#{count}"
        return [self._make_call(step, f"{prefix}[{index}]", (item,), {}) for index, item in enumerate(items)]

    async def run_branch(self, call: StepCall, position: int, group: int) -> None:
        """Run one branch task: the step (with its retries), then the fan-in, in one commit.

        A branch whose checkpoint already exists (its task was re-created by a replay that loaded
        the history just before the branch finished) does not run again: only the fan-in remains.
        """
        recorded = self.history.get(position)
        try:
            if recorded is None:
                await self._attempt_step(call, position)  # a failure is recorded for the fan-in
        except Suspended:
            return  # a retry back-off: this branch task runs again later
        self._pending.finish_task = True
        self._pending.fan_in_group = group
        await self.flush()

    # -- sleeps and events --------------------------------------------------------------------------

    async def sleep(self, name: str, seconds: float) -> None:
        key = self._next_key("sleep", check_name(name, "the name of a sleep", MAX_WAIT_NAME_LENGTH))
        position, recorded = self._next_entry(key)
        if recorded is None:  # first time here: the deadline becomes durable, then we suspend
            self._pending.steps.append(
                (key, position, "sleep", "waiting", None, None, 0, utcnow(), None, seconds)
            )
            await self._suspend_as("sleeping", seconds)
        if recorded.status == "completed":
            return
        remaining = self._remaining(recorded)
        if remaining > 0:  # woken before the deadline (a stray claim): back to sleep
            await self._suspend_as("sleeping", remaining)
        self._pending.steps.append((key, position, "sleep", "completed", None, None, 0, None, utcnow(), None))
        self._set_status("running")

    async def wait_for_event(self, name: str, timeout: float | None) -> Any:
        key = self._next_key("event", check_name(name, "the name of an event", MAX_WAIT_NAME_LENGTH))
        position, recorded = self._next_entry(key)
        if recorded is not None and recorded.status == "completed":
            return serde.loads(recorded.output)
        if recorded is not None and recorded.status == "failed":
            error = serde.loads(recorded.error) or {}
            raise EventTimeout(error.get("message", f"no event {name!r} arrived in time"))
        event = next((e for e in self._events if e.name == name), None)
        if event is not None:  # delivered before (or while) we waited: take it, oldest first
            self._events.remove(event)
            now = utcnow()
            self._pending.consumed_events.append((event.id, key))
            self._set_status("running")
            self._pending.steps.append(
                (key, position, "event", "completed", event.payload, None, 0, now, now, None)
            )
            return serde.loads(event.payload)
        if recorded is None:
            self._pending.steps.append(
                (key, position, "event", "waiting", None, None, 0, utcnow(), None, timeout)
            )
            remaining = math.inf if timeout is None else timeout
        else:
            remaining = self._remaining(recorded)
        if remaining <= 0:
            message = f"no event {name!r} arrived before the wait's timeout"
            record = {"type": "EventTimeout", "message": message, "traceback": ""}
            self._pending.steps.append(
                (
                    key,
                    position,
                    "event",
                    "failed",
                    None,
                    orjson.dumps(record).decode(),
                    0,
                    None,
                    utcnow(),
                    None,
                )
            )
            raise EventTimeout(message)
        await self._suspend_as("waiting", remaining, event=name)

    async def _attempt_step(self, call: StepCall, position: int, inline: bool = False) -> Checkpoint:
        """Run a step that has no checkpoint (its retries included); its checkpoint, pending.

        `inline`: a branch run in this execution's nursery, whose retry back-off must not suspend
        the execution while its sibling branches run (it raises _RetryLater instead).
        """
        key = call.key
        pending = self._pending
        previous = self.last_attempts.get(key)
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
            limit = self.services.max_abandoned
            if limit and previous.crashes >= limit:
                await self.fail(
                    StepAbandoned(
                        f"step {key!r} was abandoned {previous.crashes} times: each attempt's worker "
                        "died (crash, kill, out of memory or lost lease) before the attempt ended, so "
                        "the execution is failed rather than allowed to take more workers down "
                        f"(poison-pill limit max_abandoned={limit})"
                    )
                )
        started = utcnow()
        pending.attempt_starts.append((key, attempt, started))
        self._mark_running()
        # In flight from its commit on: a stop that comes right after it closes this attempt.
        self.in_flight[key] = attempt
        await self.flush()  # the attempt is on record before the step's side effects begin

        info = Context(self.execution_id, self.workflow_name, key, attempt)
        try:
            result = await self._invoke(call, info)
            data = serde.dumps(result, f"the result of step {key!r}")
        except Exception as exc:
            del self.in_flight[key]
            failures += 1
            policy = call.step.retry
            self._record_attempt_end(key, attempt, exc)
            # An unserialisable result fails the same way every time: no point retrying it.
            if not isinstance(exc, SerializationError) and policy.should_retry(failures, exc):
                delay = policy.delay_before_retry(failures)
                if inline:
                    raise _RetryLater(delay) from None
                await self.suspend(delay)  # ends this run here
            return self._record_failure(key, position, attempt, started, exc)
        del self.in_flight[key]
        finished = utcnow()
        output = data.decode()
        self._pending.attempt_ends.append((key, attempt, finished, "succeeded", None, None, None))
        self._pending.steps.append(
            (key, position, "step", "completed", output, None, attempt, started, finished, None)
        )
        return Checkpoint(key, position, "completed", output, None)

    async def _invoke(self, call: StepCall, info: Context) -> Any:
        """Run the step's body once, bounded by its timeout (an abandoned thread for a sync step)."""
        step = call.step
        execution_token = _current_execution.set(None)  # a step called inside a step is plain
        info_token = _current_info.set(info)
        try:
            with trio.move_on_after(step.timeout if step.timeout is not None else math.inf) as scope:
                if step.is_async:
                    return await step.fn(*call.args, **call.kwargs)
                return await trio.to_thread.run_sync(
                    partial(contextvars.copy_context().run, step.fn, *call.args, **call.kwargs),
                    limiter=self.services.step_limiter,
                    abandon_on_cancel=True,
                )
            assert scope.cancelled_caught
            raise StepTimeout(
                f"attempt {info.attempt} of step {info.step_key!r} exceeded the step's timeout "
                f"of {step.timeout:g} s"
            )
        finally:
            _current_info.reset(info_token)
            _current_execution.reset(execution_token)

    def _record_attempt_end(self, key: str, attempt: int, exc: BaseException) -> None:
        record = error_record(exc)
        outcome = "timed_out" if isinstance(exc, StepTimeout) else "failed"
        self._pending.attempt_ends.append(
            (key, attempt, utcnow(), outcome, record["type"], record["message"], record["traceback"])
        )

    def _record_failure(
        self, key: str, position: int, attempt: int, started: datetime, exc: BaseException
    ) -> Checkpoint:
        """The step's final failure: its checkpoint (the workflow sees it as StepFailed)."""
        error = orjson.dumps(error_record(exc)).decode()
        self._pending.steps.append(
            (key, position, "step", "failed", None, error, attempt, started, utcnow(), None)
        )
        return Checkpoint(key, position, "failed", None, error)

    # -- durability -----------------------------------------------------------------------------

    def _mark_running(self) -> None:
        self._set_status("running")

    def _set_status(self, status: str) -> None:
        if self._status != status:
            self._status = status
            self._pending.execution = (status, None, None, self._started_at, None)

    async def _suspend_as(self, status: str, delay: float, event: str | None = None) -> NoReturn:
        """Suspend a sleep (`sleeping`) or an event wait (`waiting`, woken early by its event)."""
        self._set_status(status)
        self._pending.wake_on_event = event
        await self.suspend(delay)

    async def flush(self) -> None:
        """Commit the pending writes (grouped with other executions' by the completer).

        Shielded: once handed over, a commit runs to its end, so a timeout or a shutdown never
        leaves the execution unsure of what is durable.
        """
        if self._inline_branches:
            committed = await self._commit_with_siblings()
        else:
            committed = await self._commit_pending()
        if not committed:
            raise LeaseLost(f"lost the lease on execution {self.execution_id!r}")
        # A stop that came during the commit takes effect here: a workflow whose steps never
        # reach an unshielded checkpoint (fast async steps) would otherwise run on forever.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _commit_pending(self) -> bool:
        fragment = self._pending
        if fragment.is_empty():
            return True
        self._pending = self._new_fragment()
        with trio.CancelScope(shield=True):
            return await self.services.completer.commit(fragment)

    async def _commit_with_siblings(self) -> bool:
        """A flush while inline branches run: the branches that flush in the same scheduling round
        (a window of them starting their attempts, several finishing) share one fragment, so a wave
        of N branches costs the completer one fragment, not N."""
        joined = self._round
        if joined is not None and not joined.taken:  # its fragment holds what we just recorded
            with trio.CancelScope(shield=True):
                await joined.done.wait()
            if joined.error is not None:
                raise joined.error
            return joined.committed
        round_ = self._round = _Round()
        try:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()  # let the siblings that flush now join this round
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
        self._pending.release_after = delay
        await self.flush()
        self.services.wake_claimer()
        raise Suspended

    async def finish(self, status: str, result: str | None, error: str | None) -> None:
        self._pending.execution = (status, result, error, self._started_at, utcnow())
        self._pending.finish_execution = True
        await self.flush()

    async def fail(self, error: BaseException) -> NoReturn:
        """End the execution `failed` with `error` from wherever it runs (a branch included), and stop."""
        await self.finish("failed", None, error_json(error))
        raise Suspended

    async def time_out(self) -> None:
        """End the execution `timed_out`; the attempt in flight, if any, is recorded as cut short."""
        message = "the execution exceeded its workflow timeout"
        if self.workflow is not None and self.workflow.timeout is not None:
            message += f" of {self.workflow.timeout:g} s"
        for key, attempt in self.in_flight.items():
            self._pending.attempt_ends.append(
                (key, attempt, utcnow(), "timed_out", "WorkflowTimedOut", message, None)
            )
        self._pending.close_attempts = ("timed_out", "WorkflowTimedOut", message)
        error = orjson.dumps({"type": "WorkflowTimedOut", "message": message, "traceback": ""})
        await self.finish("timed_out", None, error.decode())

    # -- the body ---------------------------------------------------------------------------------

    async def run(self, input_json: str | None) -> None:
        """Run (or resume) the workflow body until it ends, suspends, or its deadline passes."""
        deadline = math.inf if self.deadline is None else self.deadline
        if trio.current_time() >= deadline:
            await self.time_out()
            return
        with trio.move_on_at(deadline) as scope, contextlib.suppress(Suspended):
            await self._run_body(input_json)
        if scope.cancelled_caught:
            await self.time_out()

    async def _run_body(self, input_json: str | None) -> None:
        workflow = self.workflow
        assert workflow is not None
        execution_token = _current_execution.set(self)
        info_token = _current_info.set(Context(self.execution_id, workflow.name))
        failure: Exception | None = None
        try:
            value = serde.loads(input_json)
            coroutine = workflow.fn(value) if workflow.takes_input else workflow.fn()
            result = await coroutine
        except Exception as exc:
            failure = exc
        finally:
            _current_info.reset(info_token)
            _current_execution.reset(execution_token)
        # A divergence fails the execution even when the workflow caught it, and so does history
        # the body never reached (code that lost steps would otherwise end "completed").
        divergence = self.nondeterminism or self._unreached_history()
        if divergence is not None:
            await self.finish("failed", None, error_json(divergence))
            return
        if failure is not None:
            await self.finish("failed", None, error_json(failure))
            return
        try:
            data = serde.dumps(result, f"the result of workflow {workflow.name!r}")
        except SerializationError as exc:
            await self.finish("failed", None, error_json(exc))
            return
        await self.finish("completed", data.decode(), None)

    def _unreached_history(self) -> NonDeterminismError | None:
        """The error for history entries past where the body ended, if there are any."""
        unreached = sorted(seq for seq in self.history if seq >= self._position)
        if not unreached:
            return None
        first = self.history[unreached[0]]
        return NonDeterminismError(
            f"execution {self.execution_id!r}: the workflow ended after {self._position} history "
            f"entries, but the history recorded {len(self.history)}: {first.key!r} at position "
            f"{first.seq + 1} was never reached; the workflow's code changed its steps since this "
            "execution started"
        )


def _require_execution(what: str) -> ExecutionContext:
    execution = _current_execution.get()
    if execution is None:
        raise ZartError(f"{what} can only be awaited inside a workflow run by Zart")
    return execution


async def sleep(name: str, duration: Any) -> None:
    """Suspend the execution durably for `duration` (`"5m"`, `timedelta`...): no worker is held.

    `name` identifies the sleep in the history (`sleep:name#k`); the deadline is fixed the first
    time the workflow reaches it and survives restarts.
    """
    from .durations import parse_duration

    execution = _require_execution("zart.sleep()")
    await execution.sleep(name, parse_duration(duration, f"duration of sleep {name!r}"))


async def wait_for_event(name: str, timeout: Any = None) -> Any:
    """Wait durably for the event `name` sent to this execution; its payload, or EventTimeout."""
    from .durations import parse_duration

    execution = _require_execution("zart.wait_for_event()")
    seconds = None if timeout is None else parse_duration(timeout, f"timeout of event wait {name!r}")
    return await execution.wait_for_event(name, seconds)


async def parallel(*calls: StepCall) -> list[Any]:
    """Run step calls concurrently, on any worker; their results in argument order.

    Each branch is checkpointed on its own, so a restart re-runs only the unfinished ones. If some
    fail (after their retries), StepFailed for the first failure in argument order is raised once
    all are finished, with every branch's outcome in its `outcomes`.
    """
    execution = _require_execution("zart.parallel()")
    if not calls:
        return []
    return await execution.parallel(list(calls), None)


async def map(step: Step, items: Any, concurrency: int | None = None) -> list[Any]:
    """A durable loop: `step(item)` for each item, one checkpoint per item (`name[i]`), at most
    `concurrency` in flight, results in item order. A restart skips the finished items."""
    execution = _require_execution("zart.map()")
    if not isinstance(step, StepDefinition):
        raise TypeError(f"zart.map() takes a @zart.step function, got {step!r}")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ValueError(f"concurrency must be a whole number >= 1 or None, got {concurrency!r}")
    calls = execution.map_calls(step, list(items))
    if not calls:
        return []
    return await execution.parallel(calls, concurrency)
