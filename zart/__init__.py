"""Zart: durable execution for Python on PostgreSQL.

The whole public API lives here; everything else in the package is internal.
"""

from .client import (
    ExecutionHandle,
    ExecutionInfo,
    aget,
    astart,
    get,
    start,
)
from .client import list_executions as list
from .errors import (
    Cancelled,
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateExecution,
    ExecutionNotFound,
    NonDeterminismError,
    NonRetryable,
    ResultTimeout,
    SerializationError,
    StepFailed,
    StepTimeout,
    UnknownWorkflow,
    WorkflowFailed,
    WorkflowTimedOut,
    ZartError,
)
from .registry import Step, Workflow, step, workflow
from .replay import Context, context
from .retry import Retry
from .schema import migrate
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "ConfigurationError",
    "Context",
    "DatabaseUnavailable",
    "DuplicateExecution",
    "ExecutionHandle",
    "ExecutionInfo",
    "ExecutionNotFound",
    "NonDeterminismError",
    "NonRetryable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Step",
    "StepFailed",
    "StepTimeout",
    "UnknownWorkflow",
    "Worker",
    "Workflow",
    "WorkflowFailed",
    "WorkflowTimedOut",
    "ZartError",
    "__version__",
    "aget",
    "astart",
    "context",
    "get",
    "list",
    "migrate",
    "start",
    "step",
    "workflow",
]
