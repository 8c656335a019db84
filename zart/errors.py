"""Every exception Zart raises on purpose.

Each carries a message that names the problem (the unknown workflow, the offending type, both step keys
of a replay mismatch) so that callers never need a traceback from deep inside the engine to understand
what went wrong.
"""

from __future__ import annotations


class ZartError(Exception):
    """Base class of all Zart errors."""


class ConfigurationError(ZartError):
    """The database URL, the embedded server or an option is missing or wrong."""


class DatabaseUnavailable(ZartError):
    """PostgreSQL could not be reached at the configured URL."""


class SerializationError(ZartError, TypeError):
    """A value cannot be stored as JSON (raised at the call that passed it)."""


class UnknownWorkflow(ZartError, LookupError):
    """A workflow name that neither this process nor any registered worker knows."""


class UnknownQueue(ZartError, LookupError):
    """A queue name that neither this process declared nor the database knows."""


class DuplicateExecution(ZartError):
    """An execution id already exists and belongs to another workflow."""


class ExecutionNotFound(ZartError, LookupError):
    """No execution has this id."""


class NonDeterminismError(ZartError):
    """Replaying a workflow reached a step that differs from the recorded history.

    Besides its message, it says where (`position`, 0-based, as `StepRecord.position`), what the history
    recorded there (`recorded_key`, None: nothing) and what the code reached there (`replayed_key`,
    None: the workflow ended before it), so that `zart replay-check` can list them without parsing text.
    """

    def __init__(
        self,
        message: str,
        position: int | None = None,
        recorded_key: str | None = None,
        replayed_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.position = position
        self.recorded_key = recorded_key
        self.replayed_key = replayed_key


class NonRetryable(ZartError):
    """Raise it in a step to fail the step at once, whatever its retry policy allows."""


class StepTimeout(ZartError):
    """An attempt of a step ran longer than the step's `timeout=` (recorded as `timed_out`)."""


class EventTimeout(ZartError, TimeoutError):
    """`zart.wait_for_event` reached its timeout before the event arrived (catchable)."""


class ExecutionFinished(ZartError):
    """The execution already ended, so it cannot take an event (the event is not stored)."""


class ExecutionNotResumable(ZartError):
    """`zart.resume` of an execution that has not ended failed, timed out or cancelled (it is still
    running, paused, or completed): nothing was changed."""


class StepNotInHistory(ZartError, LookupError):
    """`zart.fork`'s `from_step` names no step of the execution's history: nothing was created."""


class StepAbandoned(ZartError):
    """A step's attempts keep dying with their worker (a crash, an OOM kill, a lost lease).

    Recorded as the execution's error once the poison-pill limit (`max_abandoned`) is reached, so
    that one step which takes its worker down cannot take the worker's other executions with it
    again and again.
    """


class WorkerCrashed(ZartError):
    """`Worker.stop()` of a background worker that had stopped by itself on an unexpected error."""


class CheckpointRejected(ZartError):
    """PostgreSQL refused to store an execution's progress (a value it cannot hold).

    Recorded as that execution's error; the executions committed in the same batch are unharmed.
    """


class StepFailed(ZartError):
    """A step failed its last attempt; raised inside the workflow, which may catch it.

    Carries the original exception's type name, message and traceback text, since the original
    exception object itself may have been raised in another process or before a restart.
    """

    def __init__(self, step_key: str, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"step {step_key!r} failed: {error_type}: {message}")
        self.step_key = step_key
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        # zart.parallel / zart.map: every branch's outcome, in argument order.
        self.outcomes: list[dict] = []


class ChildFailed(StepFailed):
    """A child execution (`zart.child`, `zart.map` over a workflow) ended failed, timed out or
    cancelled; raised in the parent, which may catch it. `child_id` and `child_status` say which and
    how; `child_error` is the child's own error record (type, message, traceback), when it has one.
    """

    def __init__(
        self,
        step_key: str,
        message: str,
        traceback: str = "",
        child_id: str | None = None,
        child_status: str | None = None,
        child_error: dict | None = None,
    ) -> None:
        super().__init__(step_key, "ChildFailed", message, traceback)
        self.args = (f"child {step_key!r} failed: {message}",)
        self.child_id = child_id
        self.child_status = child_status
        self.child_error = child_error or {}


class WorkflowFailed(ZartError):
    """`result()` of an execution that ended `failed`."""

    def __init__(self, execution_id: str, error: dict | None) -> None:
        error = error or {}
        self.execution_id = execution_id
        self.error_type = error.get("type", "Error")
        self.message = error.get("message", "")
        self.traceback = error.get("traceback", "")
        super().__init__(f"execution {execution_id!r} failed: {self.error_type}: {self.message}")


class WorkflowTimedOut(ZartError):
    """`result()` of an execution that ended `timed_out`."""

    def __init__(self, message: str, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class Cancelled(ZartError):
    """`result()` of an execution that was cancelled."""

    def __init__(self, message: str, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class ResultTimeout(ZartError, TimeoutError):
    """`result(timeout=...)` gave up waiting; the execution goes on."""


class ScheduleNotFound(ZartError, LookupError):
    """No schedule has this name."""
