"""OpenTelemetry spans of executions and steps (the extra `zart[otel]`).

With opentelemetry-api installed, a run of an execution is a span (`zart.run WORKFLOW`) and each step
attempt a span under it (`zart.step STEP_KEY`), with the execution id, the step key and the attempt
as attributes. The caller's trace context at `zart.start` is stored with the execution (its
`traceparent`) and the run's span continues it, in whichever worker and however much later the run
happens. What is exported, and where, is the application's own OpenTelemetry set-up (a
TracerProvider). Without opentelemetry nothing of this is imported or run, and without a provider
set by the application no span is made: the engine's call sites test `active()` first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import ProxyTracerProvider, Status, StatusCode
except ImportError:  # pragma: no cover - the extra is not installed
    enabled = False
else:
    enabled = True
    _tracer = trace.get_tracer("zart")  # a proxy: it follows the provider the application sets later


def active() -> bool:
    """Whether spans would be recorded: OpenTelemetry is installed and the application set a
    provider. Without one, the engine makes no span at all (not even OpenTelemetry's no-op ones,
    which cost a few microseconds each: a worker's whole CPU per step is about 40)."""
    return enabled and not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def carrier() -> str | None:
    """The current trace context as JSON text (`traceparent`...), or None when there is none."""
    if not active():
        return None
    data: dict[str, str] = {}
    propagate.inject(data)
    return orjson.dumps(data).decode() if data else None


@contextmanager
def run_span(execution_id: str, workflow: str, stored: str | None) -> Iterator[None]:
    """The span of one run of an execution, a child of the context its caller stored."""
    parent = propagate.extract(orjson.loads(stored)) if stored else None
    attributes = {"zart.execution_id": execution_id, "zart.workflow": workflow}
    with _tracer.start_as_current_span(f"zart.run {workflow}", context=parent, attributes=attributes):
        yield


@contextmanager
def step_span(execution_id: str, step_key: str, attempt: int) -> Iterator[Any]:
    """The span of one step attempt, under the run's; an exception marks it failed."""
    attributes = {"zart.execution_id": execution_id, "zart.step_key": step_key, "zart.attempt": attempt}
    with _tracer.start_as_current_span(f"zart.step {step_key}", attributes=attributes) as span:
        try:
            yield span
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
