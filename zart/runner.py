"""The runner: runs one claimed task to its end, whatever happens to it.

A runner keeps its execution until the workflow ends, suspends or is lost, running every step
inline (`zart.replay`), so a step never pays for a task round trip. A timer claimed ahead (a sleep's
end, a retry's back-off: see `zart.claimer`) is replayed at once, holding its slot, and its first
clock-dependent or effectful action waits for the moment (`ExecutionContext.until_due`).

The runner is also where one execution's trouble stops: a lost lease, a write PostgreSQL refuses, a
commit abandoned at a stop, a fault of the engine with this execution. Each ends this runner alone
(failing its execution when that is the truth), never the worker or the other runners.
"""

from __future__ import annotations

import logging

import orjson
import trio

from . import registry, sql, tracing, worker_metrics
from .completer import CommitAbandoned, Fragment, FragmentRejected
from .db import is_transient
from .errors import CheckpointRejected
from .logs import log_event
from .replay import (
    ChildRun,
    ExecutionContext,
    LeaseLost,
    Services,
    StepCall,
    error_json,
    run_branch,
    utcnow,
)
from .workerstate import ClaimedTask, Held, WorkerState

log = logging.getLogger("zart.worker")


class Runner:
    """Runs the tasks the claimer hands it, each in a task of its own (`run_task`)."""

    def __init__(
        self,
        state: WorkerState,
        services: Services,
        *,
        concurrency: int,
        poll_interval: float,
    ) -> None:
        self._state = state
        self._services = services  # the same for every execution this worker runs
        self._completer = services.completer
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        # Where the children a parent's commit claimed for this worker run (zart.children): the
        # runners' nursery, set by the worker once it is open.
        self.nursery: trio.Nursery | None = None

    def start_child(
        self,
        child_id: str,
        workflow: str,
        task_id: int,
        input_json: str,
        timeout: float | None,
        parent_id: str,
        trace_context: str | None = None,
    ) -> ChildRun:
        """Run a child its parent's commit created begun and claimed for this worker (fencing token 1,
        no history yet), as a claimed task is run: held, its lease renewed, handed back at a stop."""
        assert self.nursery is not None
        task = ClaimedTask(
            id=task_id,
            claims=1,
            execution_id=child_id,
            kind="workflow",
            workflow=workflow,
            status="running",
            input_json=input_json,
            seconds_to_deadline=timeout,
            history=[],
            last_attempts={},
            events=[],
            parent_id=parent_id,
            inline_parent=True,
            trace_context=trace_context,
        )
        entry = self._state.held[task_id] = Held(task, trio.CancelScope(), trio.current_time())
        run = ChildRun()
        self.nursery.start_soon(self._run_child, entry, run)
        return run

    async def _run_child(self, entry: Held, run: ChildRun) -> None:
        try:
            await self.run_task(entry)
        finally:
            if entry.execution is not None:
                run.outcome = entry.execution.journal.ended
            run.done.set()

    async def run_task(self, entry: Held) -> None:
        """Run one claimed task; whatever happens to it, the worker and its other tasks go on."""
        state = self._state
        task = entry.task
        was_full = len(state.held) >= self._concurrency
        try:
            with entry.scope:
                await self._run_execution(entry)
        except LeaseLost:
            log_event(log, "lease.lost", logging.WARNING, worker=state.worker_id, execution=task.execution_id)
        except FragmentRejected as exc:
            # PostgreSQL refused this execution's own writes (its batch-mates were committed):
            # it fails alone, with an error that says so.
            await self._fail_alone(
                task, CheckpointRejected(f"PostgreSQL refused to store its progress: {exc}")
            )
        except CommitAbandoned as exc:
            self._interrupted(task, exc)
        except Exception as exc:
            if not is_transient(exc):
                # Not the database, not the workflow's code (its errors are recorded by the
                # replay): a fault of the engine with this one execution. Fail it, keep the rest.
                log.exception("execution %s crashed its runner", task.execution_id)
                await self._fail_alone(task, exc)
            else:
                self._interrupted(task, exc)
        finally:
            # Only our own entry: a lapsed task re-claimed by this same worker has a new one.
            if not state.stopping and state.held.get(task.id) is entry:
                del state.held[task.id]
            if worker_metrics.enabled:
                worker_metrics.set_in_flight(len(state.held))
            if was_full:
                state.wake_claimer()
            if state.draining and not state.held:
                state.drained.set()

    async def _run_execution(self, entry: Held) -> None:
        task = entry.task
        if task.status in sql.TERMINAL_STATUSES:
            await self._completer.commit(Fragment(task.execution_id, task.id, task.claims, finish_task=True))
            return
        workflow = registry.get_workflow(task.workflow)
        branch = None
        if task.kind == "step":
            assert task.payload_json is not None
            branch = orjson.loads(task.payload_json)
            step = registry.get_step(branch["step"])
            missing = None if step is not None else f"step {branch['step']!r}"
        else:
            missing = None if workflow is not None else f"workflow {task.workflow!r}"
        if missing is not None:
            log.warning(
                "execution %s needs %s, which this worker does not have; handing it back",
                task.execution_id,
                missing,
            )
            await self._completer.commit(
                Fragment(task.execution_id, task.id, task.claims, release_after=self._poll_interval)
            )
            return
        execution = ExecutionContext(
            execution_id=task.execution_id,
            workflow_name=task.workflow,
            workflow=workflow,
            task_id=task.id,
            claims=task.claims,
            history=task.history,
            last_attempts=task.last_attempts,
            services=self._services,
            status=task.status,
            events=task.events,
            deadline=None
            if task.seconds_to_deadline is None
            else entry.claimed_at + task.seconds_to_deadline,
            claimed_at=entry.claimed_at,
            # A timer claimed ahead: the replay runs now, and the execution's first action that
            # depends on the clock or has an effect waits for the moment (ExecutionContext.until_due).
            due_at=entry.due_at,
            parent_id=task.parent_id,
            parent_inline=task.inline_parent,
        )
        entry.execution = execution
        if branch is not None:
            assert task.step_key is not None and task.seq is not None and task.group is not None
            call = StepCall(execution, step, task.step_key, tuple(branch["args"]), branch["kwargs"])
            await run_branch(execution, call, task.seq, task.group)
            return
        if tracing.active():
            with tracing.run_span(task.execution_id, task.workflow, task.trace_context):
                await execution.run(task.input_json)
        else:
            await execution.run(task.input_json)
        self._state.executions_finished += 1

    def _interrupted(self, task: ClaimedTask, error: BaseException) -> None:
        """A runner ended without knowing what is durable: its task may still be claimed by us."""
        state = self._state
        log_event(
            log,
            "execution.interrupted",
            logging.WARNING,
            worker=state.worker_id,
            execution=task.execution_id,
            error=error,
        )
        if not state.stopping:  # at a stop, the hand-back of the held tasks covers it
            state.set_in_doubt()

    async def _fail_alone(self, task: ClaimedTask, error: BaseException) -> None:
        """End one execution `failed` with `error`, in a fragment of the engine's own text only."""
        message = "the execution failed in the engine; see its error"
        fragment = Fragment(
            task.execution_id,
            task.id,
            task.claims,
            execution=("failed", None, error_json(error), None, utcnow()),
            finish_execution=True,
            close_attempts=("abandoned", type(error).__name__, message),
            parent_id=task.parent_id,
            cancel_children=True,
        )
        log_event(
            log,
            "execution.failed_alone",
            logging.ERROR,
            worker=self._state.worker_id,
            execution=task.execution_id,
            error=f"{type(error).__name__}: {error}",
        )
        try:
            with trio.CancelScope(shield=True):
                await self._completer.commit(fragment)
        except (FragmentRejected, CommitAbandoned) as exc:
            self._interrupted(task, exc)
