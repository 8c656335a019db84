"""Changing a workflow's code under executions in flight: `zart.patched` and `zart.deprecate_patch`.

A patch is a change of a workflow's code guarded by `if zart.patched("id"):`, the old code in its
`else:` branch (or none). An execution that reaches that point running the new code takes the new
branch, and the choice is recorded as a marker in its history (a `patch` entry keyed `patch:id#1`),
so that its replays take it again. An execution whose history was recorded before the patch existed
has, at that point, whatever the old code did next (a step, a sleep...): there `patched` answers False
without taking a position, and the old branch replays as it ran. This is why a patch is the way to
change the steps before the point executions in flight have reached, where a plain change would be a
divergence (`NonDeterminismError`).

Once no execution can take the old branch any more (`zart replay-check` tells), the old branch is
removed and `if zart.patched("id"):` becomes `zart.deprecate_patch("id")`: it consumes the marker of
the executions that recorded one and records nothing. Once none of those is left either, it goes too.

One answer per patch id and run: the first call decides and later calls of the same id answer the
same (a patch is one change of the code: an execution must not take its old branch at one point and
its new one at another, and it records one marker). The calls are plain functions, not awaitables:
a patch chooses which durable calls come next and is no durable call itself, so it is called in the
workflow's body. A step (a `zart.parallel` or `zart.map` branch included) cannot call it: choose the
calls before the fan-out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .current import context_var, require_execution
from .errors import ZartError
from .journal import utcnow
from .names import check_name

if TYPE_CHECKING:
    from .replay import ExecutionContext

# Patch ids become checkpoint keys (`patch:id#1`), like sleep and event names.
MAX_PATCH_ID_LENGTH = 200


def marker_key(patch_id: str) -> str:
    """The history key of a patch's marker."""
    return f"patch:{patch_id}#1"


def _in_body(what: str) -> ExecutionContext:
    """The execution whose workflow body calls `what`; a ZartError that says where to call it else."""
    info = context_var.get()
    if info is not None and info.step_key is not None:
        raise ZartError(
            f"{what} is called in a workflow's body, not in a step (it was called in step "
            f"{info.step_key!r}; a zart.parallel or zart.map branch is a step): a patch chooses "
            "which durable calls the body makes next"
        )
    return require_execution(what, "called")


def patched(patch_id: str) -> bool:
    """True if this execution runs the code with patch `patch_id` at this point, False if its history
    was recorded by the code from before it (then the old code must run: see the module's docstring).
    """
    execution = _in_body("zart.patched()")
    check_name(patch_id, "a patch id", MAX_PATCH_ID_LENGTH)
    history = execution.history
    answer = history.patches.get(patch_id)
    if answer is not None:
        return answer
    key = marker_key(patch_id)
    recorded = history.marker_at(key)
    if recorded is None:  # past the recorded history: from here on, this execution runs the new code
        position = history.take_positions(1)
        now = utcnow()
        # Committed with the execution's next write (the next step's start, a wait, its end): until
        # then a replay decides the same way again, since its history still ends here.
        execution.journal.pending.steps.append(
            (key, position, "patch", "completed", "true", None, 0, now, now, None)
        )
        answer = True
    else:
        answer = recorded.key == key  # the marker (now consumed), or what the old code recorded
    history.patches[patch_id] = answer
    return answer


def deprecate_patch(patch_id: str) -> None:
    """For code whose old branch of patch `patch_id` was removed: consume the patch's marker if the
    history has it at this point, else do nothing. It never records one."""
    execution = _in_body("zart.deprecate_patch()")
    check_name(patch_id, "a patch id", MAX_PATCH_ID_LENGTH)
    history = execution.history
    if patch_id in history.patches:
        return
    history.marker_at(marker_key(patch_id))
    history.patches[patch_id] = True
