"""`zart replay-check`: would the workflows' code of this process replay the recorded histories?

Before a deploy, the new code's workflows are run against the histories of executions in flight (and
of recent ones) the way a worker replays them, by the engine's own replay (`ExecutionContext`), but
in a check mode where nothing runs or is written: steps return their recorded values (a recorded
failure raises StepFailed), recorded sleeps, event waits and patch markers answer as recorded, and the
first thing the code does that the history has no entry for ends the check of that execution. From
there on the code would do new work, which a replay cannot check.

That end is found without a second interpreter: a worker waits for `until_due` before anything with
an effect or that depends on the clock (a step's attempt, a wait's check, a fan-out's tasks), and
every write goes through the completer. The checked execution's `until_due` and its completer both
raise `ReachedEnd`; fan-outs are never run inline. What the replay found is the verdict:

* `diverged`: the code reached another key than the history's at some position (NonDeterminismError,
  with both keys), or ended before the history did;
* `error`: the code raised an exception the execution did not end with (it would fail it);
* `missing`: no code registers the execution's workflow (no worker of this code would run it);
* `consistent`: anything else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

import attrs
import trio

from . import registry
from .completer import Completer
from .errors import NonDeterminismError
from .history_reads import DEFAULT_BATCH_SIZE, RecordedExecution, recorded_executions
from .replay import ExecutionContext, Services, Suspended

# How long one replay may take before it counts as an error: a body that awaits something that is not
# durable (a trio.sleep, a lock) would otherwise hold the whole check.
REPLAY_SECONDS = 10.0

VERDICTS = ("consistent", "diverged", "error", "missing")


class ReachedEnd(BaseException):
    """The replay reached the end of the recorded history: from here on the code does new work.

    A BaseException, as Suspended is, so that a workflow's `except Exception:` cannot swallow it.
    """


class _NoCommits:
    """The completer of a checked execution: a write means the code went past its history."""

    async def commit(self, fragment: Any) -> bool:
        raise ReachedEnd


class _CheckedExecution(ExecutionContext):
    """An execution replayed in check mode: its first action past the history raises ReachedEnd."""

    async def until_due(self) -> None:
        raise ReachedEnd


@attrs.frozen
class Verdict:
    """What replaying one execution with the current code found (see the module's docstring)."""

    execution_id: str
    workflow: str
    status: str  # the execution's, as recorded
    in_flight: bool
    verdict: str  # consistent | diverged | error | missing
    position: int | None = None  # where it diverged (0-based, as StepRecord.position)
    recorded_key: str | None = None  # what the history has there (None: nothing)
    code_key: str | None = None  # what the code reached there (None: the workflow ended)
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "consistent"


def _services() -> Services:
    return Services(
        completer=cast(Completer, _NoCommits()),
        step_limiter=trio.CapacityLimiter(1),  # never used: no step runs
        worker_id="replay-check",
        wake_claimer=lambda: None,
        max_abandoned=None,
        inline_fanout=0,
        may_inline=lambda: False,
    )


async def check_execution(recorded: RecordedExecution, services: Services) -> Verdict:
    """Replay one recorded execution against the registered code, without effects: its verdict."""
    found = _Found(recorded)
    workflow = registry.get_workflow(recorded.workflow)
    if workflow is None:
        return found(
            "missing",
            message=f"no code for workflow {recorded.workflow!r} in the --app modules: it would not run",
        )
    execution = _CheckedExecution(
        execution_id=recorded.id,
        workflow_name=recorded.workflow,
        workflow=workflow,
        task_id=0,
        claims=0,
        history=recorded.history,
        last_attempts={},
        services=services,
        status=recorded.status,
        claimed_at=0.0,
    )
    reached_end = False
    failure: Exception | None = None
    with trio.move_on_after(REPLAY_SECONDS) as scope:
        try:
            _result, failure = await execution.call_body(recorded.input_json)
        except (ReachedEnd, Suspended):
            reached_end = True
    history = execution.history
    if history.nondeterminism is not None:  # even if the workflow caught it, as a worker's run fails
        return _diverged(found, history.nondeterminism)
    if scope.cancelled_caught:
        return found(
            "error",
            message=f"the replay did not end within {REPLAY_SECONDS:g} s: the workflow waits for "
            "something that is not durable",
        )
    if reached_end:
        return found("consistent")
    unreached = history.unreached()
    if failure is not None:
        failed_alike = recorded.status == "failed" and recorded.error_type == type(failure).__name__
        if unreached is None and failed_alike:
            return found("consistent")  # it fails where and as the execution did
        return found("error", message=f"{type(failure).__name__}: {failure}")
    if unreached is not None:
        return _diverged(found, unreached)
    return found("consistent")


@attrs.frozen
class _Found:
    recorded: RecordedExecution

    def __call__(self, verdict: str, **details: Any) -> Verdict:
        found = self.recorded
        return Verdict(found.id, found.workflow, found.status, found.in_flight, verdict, **details)


def _diverged(found: _Found, error: NonDeterminismError) -> Verdict:
    return found(
        "diverged",
        position=error.position,
        recorded_key=error.recorded_key,
        code_key=error.replayed_key,
        message=str(error),
    )


async def _check_batch(batch: list[RecordedExecution]) -> list[Verdict]:
    services = _services()
    return [await check_execution(recorded, services) for recorded in batch]


def check_executions(batches: Iterable[list[RecordedExecution]]) -> Iterator[Verdict]:
    """The verdict of each execution of `batches`, in order; one trio run per batch."""
    for batch in batches:
        yield from trio.run(_check_batch, batch)


def replay_check(
    url: str,
    *,
    workflow: str | None = None,
    since: float,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[Verdict]:
    """The verdicts of the executions in flight, then of those that finished less than `since` seconds
    ago (at most `limit` in all), against the workflows registered in this process."""
    batches = recorded_executions(url, workflow=workflow, since=since, limit=limit, batch_size=batch_size)
    return check_executions(batches)


@attrs.define
class Summary:
    """The counts of a check, by verdict and by kind of execution."""

    in_flight: int = 0
    finished: int = 0
    counts: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(VERDICTS, 0))
    began: float = attrs.field(factory=time.perf_counter)
    seconds: float = 0.0

    def add(self, verdict: Verdict) -> None:
        self.counts[verdict.verdict] += 1
        if verdict.in_flight:
            self.in_flight += 1
        else:
            self.finished += 1
        self.seconds = time.perf_counter() - self.began

    @property
    def checked(self) -> int:
        return self.in_flight + self.finished

    @property
    def ok(self) -> bool:
        return self.counts["consistent"] == self.checked
