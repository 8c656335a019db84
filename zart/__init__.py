"""Zart: durable execution for Python on PostgreSQL.

The whole public API lives here; everything else in the package is internal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .children import child, map
    from .client import (
        AttemptRecord,
        ChildRecord,
        ExecutionHandle,
        ExecutionInfo,
        StepRecord,
        acancel,
        aget,
        alist,
        asend_event,
        astart,
        astart_many,
        cancel,
        get,
        send_event,
        start,
        start_many,
    )
    from .client import list_executions as list
    from .errors import (
        Cancelled,
        ChildFailed,
        ConfigurationError,
        DatabaseUnavailable,
        DuplicateExecution,
        EventTimeout,
        ExecutionFinished,
        ExecutionNotFound,
        ExecutionNotResumable,
        NonDeterminismError,
        NonRetryable,
        ResultTimeout,
        ScheduleNotFound,
        SerializationError,
        StepFailed,
        StepNotInHistory,
        StepTimeout,
        UnknownQueue,
        UnknownWorkflow,
        WorkerCrashed,
        WorkflowFailed,
        WorkflowTimedOut,
        ZartError,
    )
    from .operating import afork, apause, aresume, aunpause, fork, pause, resume, unpause
    from .queues import Queue
    from .registry import Step, Workflow, step, transaction, workflow
    from .replay import (
        Context,
        context,
        deprecate_patch,
        emit,
        parallel,
        patched,
        sleep,
        wait_for_event,
    )
    from .retry import Retry
    from .scheduler import (
        ScheduleInfo,
        list_schedules,
        pause_schedule,
        resume_schedule,
        schedule,
        unschedule,
    )
    from .schema import migrate
    from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AttemptRecord",
    "Cancelled",
    "ChildFailed",
    "ChildRecord",
    "ConfigurationError",
    "Context",
    "DatabaseUnavailable",
    "DuplicateExecution",
    "EventTimeout",
    "ExecutionFinished",
    "ExecutionHandle",
    "ExecutionInfo",
    "ExecutionNotFound",
    "ExecutionNotResumable",
    "NonDeterminismError",
    "NonRetryable",
    "Queue",
    "ResultTimeout",
    "Retry",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SerializationError",
    "Step",
    "StepFailed",
    "StepNotInHistory",
    "StepRecord",
    "StepTimeout",
    "UnknownQueue",
    "UnknownWorkflow",
    "Worker",
    "WorkerCrashed",
    "Workflow",
    "WorkflowFailed",
    "WorkflowTimedOut",
    "ZartError",
    "__version__",
    "acancel",
    "afork",
    "aget",
    "alist",
    "apause",
    "aresume",
    "asend_event",
    "astart",
    "astart_many",
    "aunpause",
    "cancel",
    "child",
    "context",
    "deprecate_patch",
    "emit",
    "fork",
    "get",
    "list",
    "list_schedules",
    "map",
    "migrate",
    "parallel",
    "patched",
    "pause",
    "pause_schedule",
    "resume",
    "resume_schedule",
    "schedule",
    "send_event",
    "sleep",
    "start",
    "start_many",
    "step",
    "transaction",
    "unpause",
    "unschedule",
    "wait_for_event",
    "workflow",
]

# Each public name and the module it comes from, imported on first use (PEP 562): `import zart` (and
# the `zart` command, which imports it) does not import the whole engine (psycopg, trio, croniter, ...)
# before it is needed. The names above under TYPE_CHECKING are the same, for type checkers.
_WHERE: dict[str, str | tuple[str, str]] = {
    "AttemptRecord": "client",
    "Cancelled": "errors",
    "ChildFailed": "errors",
    "ChildRecord": "client",
    "ConfigurationError": "errors",
    "Context": "replay",
    "DatabaseUnavailable": "errors",
    "DuplicateExecution": "errors",
    "EventTimeout": "errors",
    "ExecutionFinished": "errors",
    "ExecutionHandle": "client",
    "ExecutionInfo": "client",
    "ExecutionNotFound": "errors",
    "ExecutionNotResumable": "errors",
    "NonDeterminismError": "errors",
    "NonRetryable": "errors",
    "Queue": "queues",
    "ResultTimeout": "errors",
    "Retry": "retry",
    "ScheduleInfo": "scheduler",
    "ScheduleNotFound": "errors",
    "SerializationError": "errors",
    "Step": "registry",
    "StepFailed": "errors",
    "StepNotInHistory": "errors",
    "StepRecord": "client",
    "StepTimeout": "errors",
    "UnknownQueue": "errors",
    "UnknownWorkflow": "errors",
    "Worker": "worker",
    "WorkerCrashed": "errors",
    "Workflow": "registry",
    "WorkflowFailed": "errors",
    "WorkflowTimedOut": "errors",
    "ZartError": "errors",
    "acancel": "client",
    "afork": "operating",
    "aget": "client",
    "alist": "client",
    "apause": "operating",
    "aresume": "operating",
    "asend_event": "client",
    "astart": "client",
    "astart_many": "client",
    "aunpause": "operating",
    "cancel": "client",
    "child": "children",
    "context": "replay",
    "deprecate_patch": "replay",
    "emit": "replay",
    "fork": "operating",
    "get": "client",
    "list": ("client", "list_executions"),
    "list_schedules": "scheduler",
    "map": "children",
    "migrate": "schema",
    "parallel": "replay",
    "patched": "replay",
    "pause": "operating",
    "pause_schedule": "scheduler",
    "resume": "operating",
    "resume_schedule": "scheduler",
    "schedule": "scheduler",
    "send_event": "client",
    "sleep": "replay",
    "start": "client",
    "start_many": "client",
    "step": "registry",
    "transaction": "registry",
    "unpause": "operating",
    "unschedule": "scheduler",
    "wait_for_event": "replay",
    "workflow": "registry",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = (where, name) if isinstance(where, str) else where
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # looked up once: later uses are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
