-- Retention: `zart prune` deletes finished executions older than a cutoff, in batches.
--
-- * The partial index finds the finished executions oldest first without reading the live ones;
--   it covers exactly the terminal statuses the prune query names, so the planner can use it.
-- * zart_events had no index that covers every row of an execution (its two indexes are partial),
--   so deleting an execution's events would scan the whole table once per batch.
CREATE INDEX zart_execution_runs_finished_idx ON zart_execution_runs (finished_at)
    WHERE status IN ('completed', 'failed', 'timed_out', 'cancelled');
CREATE INDEX zart_events_execution_idx ON zart_events (execution_id);
