"""OpenTelemetry spans of executions and steps (the extra `zart[otel]`).

With opentelemetry-api installed, a run of an execution is a span (`zart.run WORKFLOW`) and each step
attempt a span under it (`zart.step STEP_KEY`), with the execution id, the step key and the attempt
as attributes. The caller's trace context at `zart.start` is stored with the execution (its
`traceparent`) and the run's span continues it, in whichever worker and however much later the run
happens. Without opentelemetry nothing of this is imported or run: `enabled` is False and the
engine's call sites test it first. What is exported, and where, is the application's own
OpenTelemetry set-up (a TracerProvider); without one, the API's spans record nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # pragma: no cover - the extra is not installed
    enabled = False
else:
    enabled = True

_TRACER = "zart"


def carrier() -> str | None:
    """The current trace context as JSON text (`traceparent`...), or None when there is none."""
    if not enabled:
        return None
    data: dict[str, str] = {}
    propagate.inject(data)
    return orjson.dumps(data).decode() if data else None


@contextmanager
def run_span(execution_id: str, workflow: str, stored: str | None) -> Iterator[None]:
    """The span of one run of an execution, a child of the context its caller stored."""
    parent = propagate.extract(orjson.loads(stored)) if stored else None
    tracer = trace.get_tracer(_TRACER)
    attributes = {"zart.execution_id": execution_id, "zart.workflow": workflow}
    with tracer.start_as_current_span(f"zart.run {workflow}", context=parent, attributes=attributes):
        yield


@contextmanager
def step_span(execution_id: str, step_key: str, attempt: int) -> Iterator[Any]:
    """The span of one step attempt, under the run's; an exception marks it failed."""
    tracer = trace.get_tracer(_TRACER)
    attributes = {"zart.execution_id": execution_id, "zart.step_key": step_key, "zart.attempt": attempt}
    with tracer.start_as_current_span(f"zart.step {step_key}", attributes=attributes) as span:
        try:
            yield span
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
