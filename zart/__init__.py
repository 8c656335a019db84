"""Zart: durable execution for Python on PostgreSQL.

The whole public API lives here; everything else in the package is internal.
"""

from .client import (
    AttemptRecord,
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
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateExecution,
    EventTimeout,
    ExecutionFinished,
    ExecutionNotFound,
    NonDeterminismError,
    NonRetryable,
    ResultTimeout,
    SerializationError,
    StepFailed,
    StepTimeout,
    UnknownQueue,
    UnknownWorkflow,
    WorkerCrashed,
    WorkflowFailed,
    WorkflowTimedOut,
    ZartError,
)
from .queues import Queue
from .registry import Step, Workflow, step, workflow
from .replay import Context, context, map, parallel, sleep, wait_for_event
from .retry import Retry
from .schema import migrate
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AttemptRecord",
    "Cancelled",
    "ConfigurationError",
    "Context",
    "DatabaseUnavailable",
    "DuplicateExecution",
    "EventTimeout",
    "ExecutionFinished",
    "ExecutionHandle",
    "ExecutionInfo",
    "ExecutionNotFound",
    "NonDeterminismError",
    "NonRetryable",
    "Queue",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Step",
    "StepFailed",
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
    "aget",
    "alist",
    "asend_event",
    "astart",
    "astart_many",
    "cancel",
    "context",
    "get",
    "list",
    "map",
    "migrate",
    "parallel",
    "send_event",
    "sleep",
    "start",
    "start_many",
    "step",
    "wait_for_event",
    "workflow",
]
