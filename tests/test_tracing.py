"""OpenTelemetry (issue 18): the caller's span around `zart.start` and the execution's spans, run by
a worker, share one trace; each step attempt is a span under its run's."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

import zart

from .apps import children_app, retry_app
from .helpers import wait_until

EXPORTER = InMemorySpanExporter()


class Switch(Sampler):
    """Samples while this module's tests run: the provider stays set for the process (OpenTelemetry
    allows one), and the tests after these should not record spans."""

    on = True

    def should_sample(self, *args, **kwargs):
        return (ALWAYS_ON if self.on else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "on while tests/test_tracing.py runs"


SWITCH = Switch()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider():
    """The SDK's provider with spans kept in memory, recording for this module's tests only."""
    provider = TracerProvider(sampler=SWITCH)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    SWITCH.on = True
    yield provider
    SWITCH.on = False
    EXPORTER.clear()


@zart.step("traced-double")
def traced_double(x: int) -> int:
    return 2 * x


@zart.workflow("traced")
async def traced(x: int) -> int:
    return await traced_double(await traced_double(x))


def test_the_callers_trace_continues_in_the_worker(worker, database_url):
    EXPORTER.clear()
    tracer = trace.get_tracer("the-caller")
    with tracer.start_as_current_span("checkout") as caller:
        handle = zart.start(traced, 5, database_url=database_url)
    assert handle.result(timeout=30) == 20
    trace_id = caller.get_span_context().trace_id

    def finished() -> dict[str, Any]:
        return {s.name: s for s in EXPORTER.get_finished_spans() if s.context.trace_id == trace_id}

    # The result is out with the final commit; the run's span ends a moment later, in the worker.
    wait_until(lambda: "zart.run traced" in finished(), what="the run's span to end")
    by_name = finished()
    assert set(by_name) == {
        "checkout",
        "zart.run traced",
        "zart.step traced-double#1",
        "zart.step traced-double#2",
    }
    run = by_name["zart.run traced"]
    assert run.parent.span_id == caller.get_span_context().span_id
    assert run.attributes["zart.execution_id"] == handle.id
    for key in ("traced-double#1", "traced-double#2"):
        step = by_name[f"zart.step {key}"]
        assert step.parent.span_id == run.context.span_id
        assert step.attributes["zart.step_key"] == key and step.attributes["zart.attempt"] == 1


def test_a_failed_attempt_is_a_span_with_an_error(worker, database_url):
    EXPORTER.clear()
    handle = zart.start(retry_app.retry_until_success, database_url=database_url)
    assert handle.result(timeout=30) == "succeeded on attempt 3"
    attempts = sorted(
        (span.attributes["zart.attempt"], span.status.status_code.name)
        for span in EXPORTER.get_finished_spans()
        if span.name.startswith("zart.step") and span.attributes["zart.execution_id"] == handle.id
    )
    assert attempts == [(1, "ERROR"), (2, "ERROR"), (3, "UNSET")]


def test_a_childs_runs_continue_the_trace_of_its_parent(worker, database_url):
    EXPORTER.clear()
    with trace.get_tracer("the-caller").start_as_current_span("order") as caller:
        handle = zart.start(children_app.one_child, 3, database_url=database_url)
    assert handle.result(timeout=30) == {"before": 9, "child": 16}
    trace_id = caller.get_span_context().trace_id

    def runs() -> dict[str, Any]:
        return {
            s.attributes["zart.execution_id"]: s
            for s in EXPORTER.get_finished_spans()
            if s.name.startswith("zart.run") and s.context.trace_id == trace_id
        }

    child_id = f"{handle.id}/square-child#1"
    wait_until(lambda: {handle.id, child_id} <= set(runs()), what="both runs' spans in the caller's trace")
    parent_runs = [s.context.span_id for s in EXPORTER.get_finished_spans() if s.name == "zart.run one-child"]
    assert runs()[child_id].parent.span_id in parent_runs
