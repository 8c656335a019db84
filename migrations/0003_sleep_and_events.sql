-- Durable sleep and external events.
--
-- A sleep or an event wait is a history entry in zart_steps like a step (kinds 'sleep' and
-- 'event'). Its row is written when the workflow first reaches it, with status 'waiting' and its
-- deadline in wake_at, so that a restart neither restarts the timer nor forgets the wait; it
-- becomes 'completed' (or 'failed' for an event timeout) when the workflow moves past it.
ALTER TABLE zart_steps DROP CONSTRAINT zart_steps_status_check;
ALTER TABLE zart_steps ADD CONSTRAINT zart_steps_status_check
    CHECK (status IN ('completed', 'failed', 'waiting'));
ALTER TABLE zart_steps ADD COLUMN wake_at timestamptz;

-- Events delivered to executions. Kept until consumed by a wait (in the order sent), so an event
-- sent before the workflow reaches its wait is not lost.
CREATE TABLE zart_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id  text NOT NULL,
    name          text NOT NULL,
    payload       json,
    -- Optional idempotency key: a repeated key is delivered once.
    key           text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    consumed_by   text,          -- the step key of the wait that took it
    consumed_at   timestamptz
);
CREATE UNIQUE INDEX zart_events_key_idx ON zart_events (execution_id, key) WHERE key IS NOT NULL;
CREATE INDEX zart_events_pending_idx ON zart_events (execution_id, id) WHERE consumed_by IS NULL;

-- A 'waiting' entry has not finished yet.
ALTER TABLE zart_steps ALTER COLUMN finished_at DROP NOT NULL;
