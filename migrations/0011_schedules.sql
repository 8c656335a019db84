-- Schedules: cron rules that start a workflow at every firing (zart.scheduler, docs/composition.md).
--
-- One row per schedule. A worker fires a schedule by locking its row (FOR UPDATE SKIP LOCKED), starting
-- the due firings' executions (ids NAME@TIME, TIME the firing in UTC: an existing id is not started
-- again) and moving next_fire_at past them, in one transaction: each firing starts once, whatever the
-- number of workers, and a worker killed half-way leaves both undone.
CREATE TABLE zart_schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    timezone text NOT NULL,
    catch_up text NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
    workflow text NOT NULL,
    -- the input of every firing's execution; NULL: the firing time (ISO-8601 UTC text)
    input json,
    next_fire_at timestamptz NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    last_execution text,
    last_fired_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX zart_schedules_due_idx ON zart_schedules (next_fire_at) WHERE NOT paused;
