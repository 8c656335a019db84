-- OpenTelemetry (zart.tracing): the trace context of the code that started an execution (W3C
-- `traceparent`, as JSON text), so that the execution's spans continue the caller's trace in
-- whichever worker runs it, however much later. NULL when the caller had no span, or no
-- OpenTelemetry. Nullable, no default: adding it rewrites nothing.
ALTER TABLE zart_execution_runs ADD COLUMN trace_context text;
