-- Zart core schema: executions, the task queue, step checkpoints and step attempts.
--
-- Design notes (see docs/architecture.md):
-- * Values are `json`, not `jsonb`: jsonb re-orders object keys, which would make replay see a
--   different dict order than the first run.
-- * zart_tasks only holds work that is pending or in flight; a finished task is deleted, so the
--   claim index stays small no matter how many executions the tables hold.
-- * run_at doubles as the lease: claiming sets run_at = now() + lease, so a task whose holder died
--   becomes claimable again when its lease runs out, and the claim query is one index range scan.
-- * No foreign keys on the hot tables: each would cost an index probe and a row lock on the
--   execution per write; the engine writes related rows in one transaction instead.

CREATE TABLE zart_execution_runs (
    id            text PRIMARY KEY,
    workflow      text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'sleeping', 'waiting',
                                    'completed', 'failed', 'timed_out', 'cancelled')),
    input         json,
    result        json,
    error         json,
    deadline_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX zart_execution_runs_status_idx ON zart_execution_runs (status, created_at);
CREATE INDEX zart_execution_runs_workflow_idx ON zart_execution_runs (workflow, created_at);

CREATE TABLE zart_tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id  text NOT NULL,
    kind          text NOT NULL DEFAULT 'workflow',
    step_key      text,
    -- Ready when run_at <= now(). While claimed, run_at is the end of the holder's lease.
    run_at        timestamptz NOT NULL DEFAULT now(),
    claimed_by    text,
    -- Incremented by every claim: the fencing token that keeps a worker whose lease lapsed from
    -- committing over the one that took the task over.
    claims        integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX zart_tasks_run_at_idx ON zart_tasks (run_at);
CREATE UNIQUE INDEX zart_tasks_one_workflow_task_idx ON zart_tasks (execution_id)
    WHERE kind = 'workflow';

CREATE TABLE zart_steps (
    execution_id  text NOT NULL,
    step_key      text NOT NULL,
    -- Position of this checkpoint in the execution's history, for the determinism check.
    seq           integer NOT NULL,
    kind          text NOT NULL DEFAULT 'step',
    status        text NOT NULL CHECK (status IN ('completed', 'failed')),
    output        json,
    error         json,
    attempts      integer NOT NULL DEFAULT 1,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, step_key)
);

CREATE TABLE zart_step_attempts (
    execution_id  text NOT NULL,
    step_key      text NOT NULL,
    attempt       integer NOT NULL,
    worker_id     text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    -- NULL while the attempt runs; then succeeded | failed | timed_out | abandoned (its worker died).
    outcome       text CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'abandoned')),
    error_type    text,
    error_message text,
    traceback     text,
    PRIMARY KEY (execution_id, step_key, attempt)
);

-- Workflow names that live workers can run, so that a process which did not import the app module
-- (the CLI, the HTTP API) can still validate a name before starting it.
CREATE TABLE zart_workflows (
    name          text PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
