-- Queues and flow control (docs/queues.md, docs/architecture.md "Queues: how a slot is taken").
--
-- * Every execution belongs to a queue ('default' unless its workflow or its start names another).
--   Its workflow task is inserted not admitted; the claim admits it (it begins) when its queue's
--   limits allow, and marks it admitted in the same UPDATE that claims it. From then on the task is
--   an ordinary ready/claimed/sleeping task until the execution ends and the task is deleted.
-- * An execution holds its queue slot while its admitted workflow task exists: from its first claim
--   to its final transaction, sleeps and event waits included. Releasing a slot therefore costs no
--   write of its own (the final transaction already deletes the task), and a worker that dies
--   holding slots loses nothing: the tasks, still admitted, come back with their leases.
-- * One claimer at a time admits into a limited queue: the claim locks the queue's row, counts what
--   is in progress, and bumps `version`; a claimer whose snapshot predates another's admission sees
--   the version moved and skips the queue for that round (see sql.CLAIM_TASKS).
-- * The rate limit keeps a sliding log of admissions in the queue row: (admitted_at[i], admitted_n[i])
--   is one claim's admission of n executions. Entries older than the period are dropped.

CREATE TABLE zart_queues (
    name          text PRIMARY KEY,
    concurrency   integer CHECK (concurrency >= 0),
    per_key       integer CHECK (per_key >= 1),
    rate_limit    integer CHECK (rate_limit >= 1),
    rate_period   double precision CHECK (rate_period > 0),
    limited       boolean GENERATED ALWAYS AS
                  (concurrency IS NOT NULL OR per_key IS NOT NULL OR rate_limit IS NOT NULL) STORED,
    -- Limits changed at run time (`zart queues set`) win over the ones declared in code, until reset.
    overridden    boolean NOT NULL DEFAULT false,
    version       bigint NOT NULL DEFAULT 0,
    admitted_at   timestamptz[] NOT NULL DEFAULT '{}',
    admitted_n    integer[] NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
);
INSERT INTO zart_queues (name) VALUES ('default');

-- Per-key round robin: when each key of a per_key queue last had an execution begin. Among keys with
-- room, the one served longest ago goes first, so one tenant's backlog cannot starve the others.
CREATE TABLE zart_queue_keys (
    queue         text NOT NULL,
    key           text NOT NULL,
    last_begun_at timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);

ALTER TABLE zart_execution_runs
    ADD COLUMN queue text NOT NULL DEFAULT 'default',
    ADD COLUMN queue_key text,
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    -- The workflow's timeout: the deadline is set when the execution begins, not while it queues.
    ADD COLUMN timeout_seconds double precision;

-- Workers register each workflow's queue with its name, so that a process which starts a workflow
-- by name without importing its module (the CLI, the HTTP API) puts it in the right queue.
ALTER TABLE zart_workflows ADD COLUMN queue text;

ALTER TABLE zart_tasks
    ADD COLUMN queue text,
    ADD COLUMN queue_key text,
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN admitted boolean NOT NULL DEFAULT true;
-- Tasks that exist now belong to executions that began before queues existed.
UPDATE zart_tasks t SET queue = 'default' WHERE kind = 'workflow';

-- Ready work of executions that began: the claim's range scan, as zart_tasks_run_at_idx was. Tasks
-- waiting for admission are not in it, so a blocked backlog costs the claim nothing.
CREATE INDEX zart_tasks_ready_idx ON zart_tasks (run_at) WHERE admitted;
DROP INDEX zart_tasks_run_at_idx;
-- Executions waiting to begin, per queue, in the order they begin (lower priority number first).
CREATE INDEX zart_tasks_queued_idx ON zart_tasks (queue, priority, run_at) WHERE NOT admitted;
-- The same per key, for per_key queues (a task's queue_key is '' when its start gave no key: the
-- executions without a key share one key of their own).
CREATE INDEX zart_tasks_queued_keys_idx ON zart_tasks (queue, queue_key, priority, run_at)
    WHERE NOT admitted;
-- Delayed starts in due order, for the claimer's "when to look again".
CREATE INDEX zart_tasks_delayed_idx ON zart_tasks (run_at) WHERE NOT admitted;
-- What is in progress per queue and key: the slots taken.
CREATE INDEX zart_tasks_in_progress_idx ON zart_tasks (queue, queue_key)
    WHERE admitted AND kind = 'workflow';
