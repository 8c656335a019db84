"""Child workflows: `zart.child`, and `zart.map` over a workflow.

A child is an execution of its own, with its own history, retries and timeout, that its parent
waits for durably. The call is checkpointed like a step: the child's start and the parent's record
of it (a `child:NAME#k` entry, `waiting`) are one transaction, so a child is started exactly once
however often the parent replays or its worker dies. The parent then parks without a worker slot
(`zart.branches`); the child's final transaction records its result, or a `ChildFailed`, in that
entry and wakes the parent (sql.FINISH_CHILDREN). A child's id defaults to `PARENT_ID/NAME#k`
(`PARENT_ID/NAME[i]` for the i-th item of a map), so it is the same on every replay.

This module checks a call's arguments and builds the `ChildCall`; how children are recorded, started
and waited for is the fan-out's (`zart.branches`), so that `zart.parallel` mixes them with steps.
"""

from __future__ import annotations

from typing import Any

from . import queues, registry
from .branches import ChildCall, check_concurrency, fan_out
from .branches import map as map_steps
from .current import require_execution
from .errors import UnknownQueue, UnknownWorkflow
from .registry import Workflow
from .starting import MAX_ID_LENGTH, check_id, declaration_row, plan

_PREFIX = "child:"


def child(
    workflow: Workflow | str,
    input: Any = None,
    *,
    id: str | None = None,
    queue: Any = None,
    key: str | None = None,
    priority: int = 0,
) -> ChildCall:
    """Start `workflow` as a child execution and wait for it durably: `await zart.child(wf, x)`.

    Returns the child's result, or raises `zart.ChildFailed` (a `StepFailed`) if it failed, timed
    out or was cancelled. The parent holds no worker while it waits. `id` defaults to
    `PARENT_ID/NAME#k`; `queue`, `key` and `priority` are those of `zart.start`. Awaitable once, or
    passed to `zart.parallel` with other children and steps.
    """
    execution = require_execution("zart.child()", "called")
    found = _workflow(workflow, "zart.child()")
    call_key = execution.history.next_key(_PREFIX.rstrip(":"), found.name)
    child_id = _child_id(execution.execution_id, call_key, id)
    return _call(execution, found, call_key, child_id, input, queue, key, priority)


async def map(target: Any, items: Any, concurrency: int | None = None) -> list[Any]:
    """`zart.map`: over a `@zart.step`, one checkpointed step per item (`zart.branches.map`); over a
    `@zart.workflow`, one child execution per item (ids `PARENT_ID/NAME[i]`), at most `concurrency`
    of them running at once, their results in item order. A failed child raises ChildFailed once
    every child has ended, with each one's outcome in its `outcomes`."""
    if not isinstance(target, Workflow):
        return await map_steps(target, items, concurrency)
    execution = require_execution("zart.map()")
    check_concurrency(concurrency)
    items = list(items)
    count = execution.history.count_call("map-child", target.name)
    prefix = f"{_PREFIX}{target.name}" if count == 1 else f"{_PREFIX}{target.name}#{count}"
    calls = []
    for index, item in enumerate(items):
        call_key = f"{prefix}[{index}]"
        child_id = _child_id(execution.execution_id, call_key, None)
        calls.append(_call(execution, target, call_key, child_id, item, None, None, 0))
    if not calls:
        return []
    return await fan_out(execution, list(calls), concurrency)


def _workflow(workflow: Any, what: str) -> Workflow:
    """The child's workflow, known to this process: its timeout and queue come from its definition."""
    if isinstance(workflow, Workflow):
        return workflow
    if isinstance(workflow, str):
        found = registry.get_workflow(workflow)
        if found is None:
            known = ", ".join(repr(name) for name in sorted(registry.workflow_names())) or "none"
            raise UnknownWorkflow(
                f"{what}: unknown workflow {workflow!r}; known workflows: {known} "
                "(a child's workflow must be imported by the parent's worker)"
            )
        return found
    raise TypeError(f"{what} takes a @zart.workflow function or its name, not {workflow!r}")


def _child_id(parent_id: str, call_key: str, given: Any) -> str:
    if given is not None:
        return check_id(given)
    child_id = f"{parent_id}/{call_key.removeprefix(_PREFIX)}"
    if len(child_id) > MAX_ID_LENGTH:
        raise ValueError(
            f"the child's default id {child_id[:60]!r}... is longer than {MAX_ID_LENGTH} characters "
            "(its parent's id is long): pass zart.child an id="
        )
    return child_id


def _call(
    execution: Any,
    workflow: Workflow,
    call_key: str,
    child_id: str,
    input: Any,
    queue: Any,
    key: Any,
    priority: Any,
) -> ChildCall:
    """The call, its start checked now as `zart.start` checks one (input, queue, key, priority)."""
    checked, _ = plan(
        workflow, [input], [child_id], queue=queue, key=key, priority=priority, delay=None, run_at=None
    )
    if checked.declare is None and checked.queue != queues.DEFAULT:
        # A queue this process does not know may not exist: the child would wait in it forever.
        raise UnknownQueue(
            f"zart.child(): unknown queue {checked.queue!r}; declare it with zart.Queue in a module "
            "the parent's worker imports"
        )
    declaration = None if checked.declare is None else declaration_row(checked.queue, checked.declare)
    start = (
        child_id,
        workflow.name,
        checked.inputs[0],
        checked.timeout,
        checked.queue,
        checked.key,
        checked.priority,
        checked.trace,  # the trace context of the parent's run: the child's runs continue it
    )
    return ChildCall(execution, call_key, start, declaration)
