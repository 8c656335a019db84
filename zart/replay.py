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

import contextvars
import traceback as traceback_module
from collections import defaultdict
from collections.abc import Generator
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from . import serde
from .completer import Completer, Fragment
from .errors import NonDeterminismError, SerializationError, StepFailed, ZartError

if TYPE_CHECKING:
    from .registry import Step, Workflow

_current_execution: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "zart_execution", default=None
)
_current_info: contextvars.ContextVar[Context | None] = contextvars.ContextVar("zart_context", default=None)


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


@attrs.frozen
class Checkpoint:
    """One recorded history entry."""

    key: str
    seq: int
    status: str
    output: str | None
    error: str | None


@attrs.frozen
class LastAttempt:
    """The latest attempt of a step that has no checkpoint yet."""

    attempt: int
    still_open: bool


@attrs.frozen
class Services:
    """What an execution needs from its worker."""

    completer: Completer
    step_limiter: trio.CapacityLimiter
    worker_id: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_record(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback_module.format_exception(exc)),
    }


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


class ExecutionContext:
    """The state of one execution while a worker runs it."""

    def __init__(
        self,
        *,
        execution_id: str,
        workflow: Workflow,
        task_id: int,
        claims: int,
        history: list[Checkpoint],
        last_attempts: dict[str, LastAttempt],
        services: Services,
        already_started: bool,
    ) -> None:
        self.execution_id = execution_id
        self.workflow = workflow
        self.task_id = task_id
        self.claims = claims
        self.history = history
        self.last_attempts = last_attempts
        self.services = services
        self.nondeterminism: NonDeterminismError | None = None
        self._started = already_started
        self._started_at = utcnow()
        self._position = 0
        self._calls: defaultdict[str, int] = defaultdict(int)
        self._pending = self._new_fragment()

    def _new_fragment(self) -> Fragment:
        return Fragment(self.execution_id, self.task_id, self.claims)

    # -- step calls -------------------------------------------------------------------------------

    def call_step(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepCall:
        self._calls[step.name] += 1
        key = f"{step.name}#{self._calls[step.name]}"
        for index, arg in enumerate(args):
            serde.dumps(arg, f"argument {index + 1} of step {key!r}")
        for name, arg in kwargs.items():
            serde.dumps(arg, f"argument {name!r} of step {key!r}")
        return StepCall(self, step, key, args, kwargs)

    async def run_step(self, call: StepCall) -> Any:
        position = self._position
        self._position += 1
        if position < len(self.history):
            recorded = self.history[position]
            if recorded.key != call.key:
                self.nondeterminism = NonDeterminismError(
                    f"execution {self.execution_id!r}: replay reached step {call.key!r} at "
                    f"position {position + 1}, but the history recorded {recorded.key!r} there; "
                    "the workflow's code changed its steps since this execution started"
                )
                raise self.nondeterminism
            if recorded.status == "completed":
                return serde.loads(recorded.output)
            error = serde.loads(recorded.error) or {}
            raise StepFailed(
                recorded.key,
                error.get("type", "Error"),
                error.get("message", ""),
                error.get("traceback", ""),
            )
        return await self._run_new_step(call, position)

    async def _run_new_step(self, call: StepCall, position: int) -> Any:
        key = call.key
        pending = self._pending
        previous = self.last_attempts.get(key)
        attempt = 1
        if previous is not None:
            attempt = previous.attempt + 1
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
        started = utcnow()
        pending.attempt_starts.append((key, attempt, started))
        self._mark_running()
        await self.flush()  # the attempt is on record before the step's side effects begin

        info = Context(self.execution_id, self.workflow.name, key, attempt)
        try:
            result = await self._invoke(call, info)
        except Exception as exc:
            raise self._record_failure(key, position, attempt, started, exc) from None
        try:
            data = serde.dumps(result, f"the result of step {key!r}")
        except SerializationError as exc:
            raise self._record_failure(key, position, attempt, started, exc) from None
        finished = utcnow()
        pending = self._pending
        pending.attempt_ends.append((key, attempt, finished, "succeeded", None, None, None))
        pending.steps.append(
            (key, position, "step", "completed", data.decode(), None, attempt, started, finished)
        )
        return orjson.loads(data)

    async def _invoke(self, call: StepCall, info: Context) -> Any:
        step = call.step
        execution_token = _current_execution.set(None)  # a step called inside a step is plain
        info_token = _current_info.set(info)
        try:
            if step.is_async:
                return await step.fn(*call.args, **call.kwargs)
            return await trio.to_thread.run_sync(
                partial(contextvars.copy_context().run, step.fn, *call.args, **call.kwargs),
                limiter=self.services.step_limiter,
            )
        finally:
            _current_info.reset(info_token)
            _current_execution.reset(execution_token)

    def _record_failure(
        self, key: str, position: int, attempt: int, started: datetime, exc: BaseException
    ) -> StepFailed:
        finished = utcnow()
        record = error_record(exc)
        pending = self._pending
        pending.attempt_ends.append(
            (
                key,
                attempt,
                finished,
                "failed",
                record["type"],
                record["message"],
                record["traceback"],
            )
        )
        pending.steps.append(
            (
                key,
                position,
                "step",
                "failed",
                None,
                orjson.dumps(record).decode(),
                attempt,
                started,
                finished,
            )
        )
        return StepFailed(key, record["type"], record["message"], record["traceback"])

    # -- durability -----------------------------------------------------------------------------

    def _mark_running(self) -> None:
        if not self._started:
            self._started = True
            self._pending.execution = ("running", None, None, self._started_at, None)

    async def flush(self) -> None:
        """Commit the pending writes (grouped with other executions' by the completer)."""
        fragment = self._pending
        if fragment.is_empty():
            return
        self._pending = self._new_fragment()
        if not await self.services.completer.commit(fragment):
            raise LeaseLost(f"lost the lease on execution {self.execution_id!r}")

    async def finish(self, status: str, result: str | None, error: str | None) -> None:
        self._pending.execution = (status, result, error, self._started_at, utcnow())
        self._pending.finish_task = True
        await self.flush()

    # -- the body ---------------------------------------------------------------------------------

    async def run(self, input_json: str | None) -> None:
        """Run (or resume) the workflow body to its end and record the outcome."""
        workflow = self.workflow
        execution_token = _current_execution.set(self)
        info_token = _current_info.set(Context(self.execution_id, workflow.name))
        try:
            value = serde.loads(input_json)
            coroutine = workflow.fn(value) if workflow.takes_input else workflow.fn()
            result = await coroutine
        except Exception as exc:
            error = self.nondeterminism or exc
            await self.finish("failed", None, orjson.dumps(error_record(error)).decode())
            return
        finally:
            _current_info.reset(info_token)
            _current_execution.reset(execution_token)
        if self.nondeterminism is not None:  # the workflow caught it: it still fails
            record = error_record(self.nondeterminism)
            await self.finish("failed", None, orjson.dumps(record).decode())
            return
        try:
            data = serde.dumps(result, f"the result of workflow {workflow.name!r}")
        except SerializationError as exc:
            await self.finish("failed", None, orjson.dumps(error_record(exc)).decode())
            return
        await self.finish("completed", data.decode(), None)
