"""Which execution, and which step of it, the running code belongs to.

Two context variables: the replay sets them around a workflow body (`zart.replay`) and around each
step's body (`zart.steps`). They are what makes a `@zart.step` call checkpoint inside a workflow and
run as the plain function anywhere else (in a step, in a unit test), and what `zart.context()`
reports. They live apart from the execution, at the bottom of the replay's modules, so that what
only asks "where am I?" (the registry, the workflow verbs) does not depend on how an execution runs.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

import attrs

from .errors import ZartError

if TYPE_CHECKING:
    from .replay import ExecutionContext

# The execution whose workflow body runs in this task; None in a step's body, where a step call is
# a plain call.
execution_var: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "zart_execution", default=None
)
# What zart.context() answers: set around the body and around each step attempt.
context_var: contextvars.ContextVar[Context | None] = contextvars.ContextVar("zart_context", default=None)


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


def current_execution() -> ExecutionContext | None:
    """The execution whose workflow body is running in this task, if any."""
    return execution_var.get()


def context() -> Context:
    """The current execution, step key, attempt and idempotency key (inside a workflow or step)."""
    info = context_var.get()
    if info is None:
        raise ZartError("zart.context() is only available inside a workflow or step run by Zart")
    return info


def require_execution(what: str, verb: str = "awaited") -> ExecutionContext:
    """The running execution, for a workflow verb (`what`) that only makes sense inside one."""
    execution = execution_var.get()
    if execution is None:
        raise ZartError(f"{what} can only be {verb} inside a workflow run by Zart")
    return execution
