"""Every SQL statement Zart runs, in one place.

All statements are parameterised. Batched writes take arrays and `unnest` them, so one statement
writes the rows of many executions: the completer's cost per batch is a fixed handful of statements
whatever the batch size.
"""

from __future__ import annotations

# The statuses an execution ends in (the engine's and the clients' test of "has it ended").
TERMINAL_STATUSES = frozenset({"completed", "failed", "timed_out", "cancelled"})
# Every status a read shows, in the order of an execution's life (`zart list --status`, the API's).
STATUSES = (
    "pending",
    "running",
    "sleeping",
    "waiting",
    "paused",
    "completed",
    "failed",
    "timed_out",
    "cancelled",
)

TASKS_CHANNEL = "zart_tasks"
# What a NOTIFY on TASKS_CHANNEL says: whose workers it wakes (zart.wake_routing). A key of the
# sending transaction (its id: the same for every NOTIFY of one transaction, so PostgreSQL still
# folds them into one) picks one group of workers, a different one from one transaction to the
# next; the empty payload wakes every group (a queue's limits changed: all may admit more).
WAKE_KEY = "txid_current()::text"
WAKE_EVERY_GROUP = ""
# ... and this one, that a worker joined or left: read the groups again.
GROUPS_CHANGED = "groups"
# Executions that ended, one notification each (payload: the execution's id), for result() waiters.
DONE_CHANNEL = "zart_done"
# Stream values committed (zart.emit), one notification per execution and stream a transaction
# appended to (payload: JSON [execution id, stream name]), for stream readers (zart.streams).
STREAM_CHANNEL = "zart_stream"

# -- starting and reading executions ---------------------------------------------------------------

# The queues a start may have to create (`declare`, JSON: [name, concurrency, per_key, rate limit, rate
# period] each), with their limits, if no worker created them yet.
_DECLARE_QUEUES = """INSERT INTO zart_queues (name, concurrency, per_key, rate_limit, rate_period)
    SELECT x->>0, (x->>1)::int, (x->>2)::int, (x->>3)::int, (x->>4)::float8
    FROM jsonb_array_elements(%(declare)s::jsonb) AS x
    ON CONFLICT (name) DO NOTHING"""

# One statement starts any number of executions, of one workflow (`start_many`) or of many (the
# starts of concurrent callers, grouped into one commit by zart.group_start): the ids and inputs as
# two arrays, and each call's options once (`plans`, JSON: a few bytes per call, where an array per
# option would cost the client a Python-level adaptation per element), `zart.start` a list of one.
# The execution rows, their workflow tasks (not admitted: the claim admits them when their queue
# allows, see CLAIM_TASKS) and the wake-up, in one round trip. An id that exists is left as it is
# (ON CONFLICT DO NOTHING); the caller learns which were created and, for the others, whose they are
# and how they stand. The NOTIFY is sent also for a delayed start, so that idle claimers recompute
# when to look again. A queue the starting process declared (`declare`) is created with its limits
# if no worker did yet, so that no execution waits in a queue the claim does not know.
START_EXECUTIONS = f"""
WITH p AS (
    -- one row per start call (plan): its options, and which rows of the ids are its own
    SELECT x->>0 AS workflow, (x->>1)::float8 AS timeout, x->>2 AS queue, x->>3 AS key,
           (x->>4)::int AS priority, (x->>5)::float8 AS delay, (x->>6)::timestamptz AS run_at,
           sum((x->>7)::int) OVER (ORDER BY e.n) - (x->>7)::int AS after, (x->>7)::int AS size,
           x->>8 AS trace
    FROM jsonb_array_elements(%(plans)s::jsonb) WITH ORDINALITY AS e(x, n)
), f AS (
    SELECT u.id, u.input, u.n, p.workflow, p.timeout, p.queue, p.key, p.priority, p.delay, p.run_at,
           p.trace
    FROM unnest(%(ids)s::text[], %(inputs)s::text[]) WITH ORDINALITY AS u(id, input, n)
    JOIN p ON u.n > p.after AND u.n <= p.after + p.size
), created AS (
    INSERT INTO zart_execution_runs (id, workflow, input, queue, queue_key, priority, timeout_seconds,
                                     trace_context)
    SELECT f.id, f.workflow, f.input::json, f.queue, f.key, f.priority, f.timeout, f.trace
    FROM f ORDER BY f.n
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), declared AS (
    {_DECLARE_QUEUES}
), tasks AS (
    INSERT INTO zart_tasks (execution_id, kind, queue, queue_key, priority, admitted, run_at)
    SELECT f.id, 'workflow', f.queue, coalesce(f.key, ''), f.priority, false,
           coalesce(f.run_at, zart_now() + make_interval(secs => f.delay))
    FROM f JOIN created c ON c.id = f.id
)
-- Per id: whether this statement created it, else whose it is and how it stands (a primary-key
-- probe per id that existed, whatever the statistics: a join here was planned as a scan of the
-- whole table while it had none).
SELECT f.id, c.id IS NOT NULL, e.workflow, coalesce(e.status, 'pending'),
       (SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) WHERE EXISTS (SELECT 1 FROM created))
FROM f LEFT JOIN created c ON c.id = f.id
LEFT JOIN LATERAL (
    SELECT r.workflow, r.status FROM zart_execution_runs r WHERE c.id IS NULL AND r.id = f.id
) e ON true
ORDER BY f.n
"""

NOTIFY_TASKS = f"SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY})"

# What an execution's end notification carries: a JSON array of its id and, when they fit in a
# NOTIFY (8,000 bytes), its final status, result and error as the JSON texts stored, so that a waiter
# returns the result without reading it back (zart.waiting): [id, status, result, error], or [id].
_DONE_PAYLOAD = """(
    SELECT CASE WHEN {status} IN ('completed', 'failed', 'timed_out', 'cancelled')
                     AND octet_length(x.payload) < 7900
                THEN x.payload ELSE json_build_array({id})::text END
    FROM (SELECT json_build_array({id}, {status}, {result}, {error})::text AS payload) x)"""

# Sent by the transaction that ends executions (completed, failed, timed out, cancelled), after
# their rows' final update: it reaches the processes waiting for their results with the commit.
NOTIFY_FINISHED = f"""
SELECT pg_notify('{DONE_CHANNEL}', {
    _DONE_PAYLOAD.format(id="r.id", status="r.status", result="r.result::text", error="r.error::text")
})
FROM zart_execution_runs r WHERE r.id = ANY(%(ids)s::text[])
"""

# The HTTP API's health check: the server answers a statement.
PING = "SELECT 1"

# What a status read shows: 'paused' while a paused execution has not ended (its own status, kept
# underneath, comes back when it is unpaused).
_SHOWN_STATUS = (
    "CASE WHEN paused AND status NOT IN ('completed', 'failed', 'timed_out', 'cancelled') "
    "THEN 'paused' ELSE status END"
)

SELECT_EXECUTION = f"""
SELECT id, workflow, {_SHOWN_STATUS}, input::text, result::text, error::text,
       created_at, started_at, finished_at, queue, queue_key, priority, forked_from, forked_at,
       resumes, (SELECT array_agg(f.id ORDER BY f.created_at) FROM zart_execution_runs f
                 WHERE f.forked_from = zart_execution_runs.id),
       parent_id, parent_key,
       (SELECT count(*) FROM zart_execution_runs c WHERE c.parent_id = zart_execution_runs.id)
FROM zart_execution_runs WHERE id = %(id)s
"""

SELECT_EXECUTION_WORKFLOW = "SELECT workflow FROM zart_execution_runs WHERE id = %(id)s"

SELECT_EXECUTION_STATUS = f"""
SELECT {_SHOWN_STATUS}, result::text, error::text FROM zart_execution_runs WHERE id = %(id)s
"""

# The status reads of many result() waiters at once (zart.status_reads): one probe per id.
SELECT_EXECUTION_STATUSES = """
SELECT id, status, result::text, error::text FROM zart_execution_runs WHERE id = ANY(%(ids)s::text[])
"""

# The newest executions, one statement per filter so that each has an index that serves it (one
# statement with `(%(status)s IS NULL OR status = ...)` would, once prepared, settle on one generic
# plan for every filter, and walk the whole created_at index for a rare status). The unfiltered one
# reads zart_execution_runs_created_idx in order; the others their (status|workflow, created_at)
# index backwards, with an incremental sort for the `id` tie-breaker of equal timestamps.
_LIST_EXECUTIONS = (
    "SELECT id, workflow, "
    + _SHOWN_STATUS
    + """, created_at, finished_at
FROM zart_execution_runs {where}
ORDER BY created_at DESC, id
LIMIT %(limit)s
"""
)
# A status filter shows what a status read shows: a paused execution under 'paused' only.
_NOT_SHOWN_PAUSED = "(NOT paused OR status IN ('completed', 'failed', 'timed_out', 'cancelled'))"
LIST_EXECUTIONS = _LIST_EXECUTIONS.format(where="")
LIST_EXECUTIONS_BY_STATUS = _LIST_EXECUTIONS.format(
    where=f"WHERE status = %(status)s AND {_NOT_SHOWN_PAUSED}"
)
LIST_EXECUTIONS_BY_WORKFLOW = _LIST_EXECUTIONS.format(where="WHERE workflow = %(workflow)s")
LIST_EXECUTIONS_BY_STATUS_AND_WORKFLOW = _LIST_EXECUTIONS.format(
    where=f"WHERE status = %(status)s AND workflow = %(workflow)s AND {_NOT_SHOWN_PAUSED}"
)
_PAUSED = "paused AND status NOT IN ('completed', 'failed', 'timed_out', 'cancelled')"
LIST_PAUSED_EXECUTIONS = _LIST_EXECUTIONS.format(where=f"WHERE {_PAUSED}")
LIST_PAUSED_EXECUTIONS_BY_WORKFLOW = _LIST_EXECUTIONS.format(
    where=f"WHERE {_PAUSED} AND workflow = %(workflow)s"
)

SELECT_STEPS = """
SELECT step_key, seq, kind, status, output::text, error::text, attempts, started_at, finished_at,
       wake_at
FROM zart_steps WHERE execution_id = %(id)s ORDER BY seq
"""

SELECT_ATTEMPTS = """
SELECT step_key, attempt, worker_id, started_at, finished_at, outcome,
       error_type, error_message, traceback
FROM zart_step_attempts WHERE execution_id = %(id)s ORDER BY started_at, step_key, attempt
"""

# Cancelling ends the execution and removes its tasks in one transaction. A worker still running
# it finds its task gone at its next commit (the fencing check) and stops; nothing it does after
# this is recorded.
CANCEL_EXECUTION = """
UPDATE zart_execution_runs
SET status = 'cancelled', finished_at = zart_now(), updated_at = zart_now(),
    error = json_build_object('type', 'Cancelled', 'message', %(reason)s::text, 'traceback', '')
WHERE id = %(id)s AND status NOT IN ('completed', 'failed', 'timed_out', 'cancelled')
RETURNING id
"""

# The attempt that was running when the execution was cancelled will never report: close it.
ABANDON_OPEN_ATTEMPTS = """
UPDATE zart_step_attempts
SET outcome = 'abandoned', finished_at = zart_now(), error_type = 'Cancelled',
    error_message = 'the execution was cancelled during this attempt'
WHERE execution_id = %(id)s AND outcome IS NULL
"""

# -- operating executions: pause, resume, fork (zart.operating) ---------------------------------------

# The execution's row, locked: these operations read its state and change it in one transaction,
# after locking its workflow task (LOCK_EXECUTION_TASK, the lock order of cancel and send_event).
SELECT_EXECUTION_FOR_UPDATE = """
SELECT status, paused, started_at IS NOT NULL FROM zart_execution_runs WHERE id = %(id)s FOR UPDATE
"""

SET_EXECUTION_PAUSED = """
UPDATE zart_execution_runs SET paused = %(paused)s, updated_at = zart_now() WHERE id = %(id)s
"""

# A paused execution's tasks are left out of every claim (zart_tasks_ready_idx and the admission
# both skip them); a runner holding one finds out at its next commit (WRITE_BATCH). Unpausing wakes
# the claimers if a task came due meanwhile (a sleep's end, an event's delivery, a fan-in), or if the
# execution had not begun yet (its admission).
SET_TASKS_PAUSED = f"""
WITH workflow_task AS (
    UPDATE zart_tasks SET paused = %(paused)s WHERE kind = 'workflow' AND execution_id = %(id)s
    RETURNING run_at <= zart_now() AS ready
), step_tasks AS (
    UPDATE zart_tasks SET paused = %(paused)s WHERE kind = 'step' AND execution_id = %(id)s
    RETURNING run_at <= zart_now() AS ready
)
SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY})
WHERE NOT %(paused)s AND (EXISTS (SELECT 1 FROM workflow_task WHERE ready)
                          OR EXISTS (SELECT 1 FROM step_tasks WHERE ready))
"""

# Resume, in one transaction after SELECT_EXECUTION_FOR_UPDATE found it failed, timed out or
# cancelled: the failed checkpoints it did not get past (its failing step: the workflow did not go on
# after them) are removed, so that step runs again; every attempt so far stops counting against its
# step's retry budget and the poison-pill limit; the execution is pending again (the claim that
# begins it sets its deadline anew) with a workflow task in its queue.
RESUME_FORGET_FAILURE = """
DELETE FROM zart_steps s
WHERE s.execution_id = %(id)s AND s.status = 'failed'
  AND s.seq > coalesce((SELECT max(c.seq) FROM zart_steps c
                        WHERE c.execution_id = %(id)s AND c.status = 'completed'), -1)
RETURNING s.step_key
"""

RESUME_FRESH_BUDGETS = """
UPDATE zart_step_attempts SET counts = false WHERE execution_id = %(id)s AND counts
"""

RESUME_EXECUTION = f"""
WITH run AS (
    UPDATE zart_execution_runs
    SET status = 'pending', result = NULL, error = NULL, finished_at = NULL, deadline_at = NULL,
        paused = false, resumes = resumes + 1, updated_at = zart_now()
    WHERE id = %(id)s
    RETURNING id, workflow, queue, queue_key, priority
), task AS (
    INSERT INTO zart_tasks (execution_id, kind, queue, queue_key, priority, admitted, run_at)
    SELECT id, 'workflow', queue, coalesce(queue_key, ''), priority, false, zart_now() FROM run
)
SELECT workflow FROM run, LATERAL (SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY})) n
"""

# The position of a step key in an execution's history (fork's `from_step`).
SELECT_STEP_POSITION = """
SELECT seq FROM zart_steps WHERE execution_id = %(id)s AND step_key = %(key)s
"""

# The length of an execution's history and the key at one position (fork's `from_step` as a position).
HISTORY_AT = """
SELECT count(*), min(step_key) FILTER (WHERE seq = %(seq)s) FROM zart_steps WHERE execution_id = %(id)s
"""

SELECT_HISTORY_KEYS = """
SELECT step_key FROM zart_steps WHERE execution_id = %(id)s ORDER BY seq LIMIT %(limit)s
"""

# Fork: a new execution of the same workflow and input, in the same queue, with the checkpoints
# before `position` copied; it begins as any start does (admission, a deadline of its own). Its
# `started_at` is set when checkpoints were copied, so that its first claim loads them (a claim
# reads no history for an execution never begun: CLAIM_TASKS's `fresh`).
FORK_EXECUTION = f"""
WITH source AS (
    SELECT workflow, input, queue, queue_key, priority, timeout_seconds
    FROM zart_execution_runs WHERE id = %(source)s
), created AS (
    INSERT INTO zart_execution_runs (id, workflow, input, queue, queue_key, priority, timeout_seconds,
                                     forked_from, forked_at, started_at)
    SELECT %(id)s, workflow, input, queue, queue_key, priority, timeout_seconds, %(source)s,
           %(forked_at)s, CASE WHEN %(position)s > 0 THEN zart_now() END
    FROM source
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, queue_key, priority
), copied AS (
    INSERT INTO zart_steps (execution_id, step_key, seq, kind, status, output, error, attempts,
                            started_at, finished_at, wake_at)
    SELECT c.id, s.step_key, s.seq, s.kind, s.status, s.output, s.error, s.attempts, s.started_at,
           s.finished_at, s.wake_at
    FROM created c, zart_steps s
    WHERE s.execution_id = %(source)s AND s.seq < %(position)s
      -- a child the source still waits for is the source's: the fork's replay starts its own
      AND NOT (s.kind = 'child' AND s.status = 'waiting')
    RETURNING 1
), copied_values AS (
    -- The values of the emits copied (zart.emit: the k-th emit to stream S is `emit:S#k`).
    INSERT INTO zart_streams (execution_id, stream, seq, value, created_at)
    SELECT c.id, v.stream, v.seq, v.value, v.created_at
    FROM created c, zart_streams v
    JOIN zart_steps s ON s.execution_id = v.execution_id AND s.step_key = 'emit:' || v.stream || '#' || v.seq
    WHERE v.execution_id = %(source)s AND s.seq < %(position)s
), task AS (
    INSERT INTO zart_tasks (execution_id, kind, queue, queue_key, priority, admitted, run_at)
    SELECT id, 'workflow', queue, coalesce(queue_key, ''), priority, false, zart_now() FROM created
)
SELECT (SELECT count(*) FROM created), (SELECT count(*) FROM copied),
       (SELECT count(*) FROM (SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) FROM created) n)
"""

# -- workflow registry -------------------------------------------------------------------------------

REGISTER_WORKFLOWS = """
INSERT INTO zart_workflows (name, timeout_seconds, queue)
SELECT * FROM unnest(%(names)s::text[], %(timeouts)s::float8[], %(queues)s::text[])
ON CONFLICT (name) DO UPDATE
SET last_seen_at = zart_now(), timeout_seconds = excluded.timeout_seconds, queue = excluded.queue
"""

SELECT_REGISTERED_WORKFLOWS = "SELECT name, timeout_seconds, queue FROM zart_workflows ORDER BY name"

# -- queues ------------------------------------------------------------------------------------------

SELECT_QUEUE_NAMES = "SELECT name FROM zart_queues ORDER BY name"

# A worker registers the queues its workflows declare: their limits as in code, unless an operator
# changed them at run time (`zart queues set`: overridden). Bumping `version` makes a claim that is
# admitting into the queue right now skip it for that round (see CLAIM_TASKS).
REGISTER_QUEUES = """
INSERT INTO zart_queues AS q (name, concurrency, per_key, rate_limit, rate_period)
SELECT * FROM unnest(%(names)s::text[], %(concurrencies)s::int[], %(per_keys)s::int[],
                     %(rate_limits)s::int[], %(rate_periods)s::float8[])
ON CONFLICT (name) DO UPDATE
SET concurrency = excluded.concurrency, per_key = excluded.per_key, rate_limit = excluded.rate_limit,
    rate_period = excluded.rate_period, version = q.version + 1, updated_at = zart_now()
WHERE NOT q.overridden
  AND (q.concurrency, q.per_key, q.rate_limit, q.rate_period)
      IS DISTINCT FROM (excluded.concurrency, excluded.per_key, excluded.rate_limit, excluded.rate_period)
"""

# Queues a worker's workflows name without declaring them (`queue="name"`): created without limits
# if missing (`zart queues set` gives them some); limits already there stay.
DECLARE_QUEUES = """
INSERT INTO zart_queues (name, concurrency, per_key, rate_limit, rate_period)
SELECT * FROM unnest(%(names)s::text[], %(concurrencies)s::int[], %(per_keys)s::int[],
                     %(rate_limits)s::int[], %(rate_periods)s::float8[])
ON CONFLICT (name) DO NOTHING
"""

# What `zart queues` and `GET /v1/queues` show: every queue (or the one named) with its limits and,
# per queue, its executions waiting to begin (ready: due now; delayed: run_at still ahead; the age of
# the oldest ready one) and those in progress (admitted workflow tasks: the slots taken). Each count
# is a range, on the queue's name, of a partial index: of the waiting tasks (zart_tasks_queued_idx or
# zart_tasks_queued_keys_idx) or of the slots taken (zart_tasks_in_progress_idx). So the statement
# reads only the queues' own waiting and running tasks: never finished work, never step tasks. Its
# cost grows with the backlog it counts, which is what an operator asks about.
QUEUE_STATS = """
SELECT q.name, q.concurrency, q.per_key, q.rate_limit, q.rate_period, q.overridden,
       w.ready, p.in_progress, w.delayed,
       extract(epoch FROM zart_now() - w.oldest_ready)::float8
FROM zart_queues q
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE t.run_at <= zart_now()) AS ready,
           count(*) FILTER (WHERE t.run_at > zart_now()) AS delayed,
           min(t.run_at) FILTER (WHERE t.run_at <= zart_now()) AS oldest_ready
    FROM zart_tasks t
    WHERE t.queue = q.name AND NOT t.admitted
) w
CROSS JOIN LATERAL (
    SELECT count(*) AS in_progress FROM zart_tasks t
    WHERE t.queue = q.name AND t.admitted AND t.kind = 'workflow'
) p
WHERE %(name)s::text IS NULL OR q.name = %(name)s::text
ORDER BY q.name
"""

# `zart queues set`: an operator's limits, which win over the ones declared in code (`overridden`:
# REGISTER_QUEUES leaves the row alone) until `--reset`. A queue that does not exist is created with
# them. Only the limits given change (`set_*`); NULL clears one. Bumping `version` makes a claim that
# is admitting into the queue with the old limits skip it for that round (see CLAIM_TASKS), and the
# NOTIFY wakes idle claimers at once: a raised limit (or a held queue let go) admits from the next
# round, with no restart and no wait for a poll.
SET_QUEUE_LIMITS = f"""
WITH changed AS (
    INSERT INTO zart_queues AS q (name, concurrency, per_key, rate_limit, rate_period, overridden)
    VALUES (%(name)s, %(concurrency)s::int, %(per_key)s::int, %(rate_limit)s::int,
            %(rate_period)s::float8, true)
    ON CONFLICT (name) DO UPDATE
    SET concurrency = CASE WHEN %(set_concurrency)s::bool THEN excluded.concurrency ELSE q.concurrency END,
        per_key = CASE WHEN %(set_per_key)s::bool THEN excluded.per_key ELSE q.per_key END,
        rate_limit = CASE WHEN %(set_rate)s::bool THEN excluded.rate_limit ELSE q.rate_limit END,
        rate_period = CASE WHEN %(set_rate)s::bool THEN excluded.rate_period ELSE q.rate_period END,
        overridden = true, version = q.version + 1, updated_at = zart_now()
    RETURNING q.name
)
SELECT name, pg_notify('{TASKS_CHANNEL}', '{WAKE_EVERY_GROUP}') FROM changed
"""

# `zart queues set NAME` with no limit: make sure the queue exists (so that starts may name it),
# without limits if new; an existing queue is left as it is.
CREATE_QUEUE = "INSERT INTO zart_queues (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING"

# `zart queues set NAME --reset`: the limits declared in code apply again. The row keeps its current
# limits until a worker that declares the queue registers it (REGISTER_QUEUES skips overridden rows
# only); nothing changes for the claim, so neither `version` nor a NOTIFY is needed.
RESET_QUEUE = """
UPDATE zart_queues SET overridden = false, updated_at = zart_now()
WHERE name = %(name)s
RETURNING name
"""

# -- workers -----------------------------------------------------------------------------------------

# The NOTIFY tells the listening workers that the groups may have changed (zart.wake_routing): they
# read them again at once, rather than at their next heartbeat.
REGISTER_WORKER = f"""
WITH registered AS (
    INSERT INTO zart_workers (id, host, pid, supervisor_pid, concurrency, worker_group, listens, lease)
    VALUES (%(id)s, %(host)s, %(pid)s, %(supervisor_pid)s, %(concurrency)s, %(group)s, %(listens)s,
            %(lease)s)
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = zart_now()
    RETURNING listens
)
SELECT pg_notify('{TASKS_CHANNEL}', '{GROUPS_CHANGED}') FROM registered WHERE listens
"""

WORKER_HEARTBEAT = "UPDATE zart_workers SET heartbeat_at = zart_now() WHERE id = %(id)s"

# The groups of workers that share the notifications (zart.wake_routing): each listening group
# (a supervisor, or a worker of its own) with a worker whose heartbeat is within its own lease, in
# order: every machine reads the same list, whatever its own lease.
LIVE_GROUPS = """
SELECT DISTINCT coalesce(worker_group, id) FROM zart_workers
WHERE listens AND heartbeat_at > zart_now() - make_interval(secs => lease)
ORDER BY 1
"""

# A notification handed on to the next group of its key's order (zart.wake_routing), by a group
# that heard it with no room to take the work.
FORWARD_WAKE = f"SELECT pg_notify('{TASKS_CHANNEL}', %(payload)s)"

UNREGISTER_WORKER = f"""
WITH gone AS (DELETE FROM zart_workers WHERE id = %(id)s RETURNING listens)
SELECT pg_notify('{TASKS_CHANNEL}', '{GROUPS_CHANGED}') FROM gone WHERE listens
"""

# A worker process that its supervisor saw die (reaped: it can write nothing more): its row goes, and
# the tasks it held are ready again at once instead of at the end of their leases. The fencing token
# still guards them: whoever claims them next bumps `claims`, and the dead worker's claim (and name)
# no longer match anything. Claimed tasks have run_at within one lease from now: the scan is a range
# of zart_tasks_ready_idx, as RELEASE_STRANDED's.
RELEASE_DEAD_WORKER = """
WITH dead AS (
    DELETE FROM zart_workers
    WHERE host = %(host)s AND pid = %(pid)s AND supervisor_pid = %(supervisor_pid)s
    RETURNING id
)
UPDATE zart_tasks SET run_at = zart_now(), claimed_by = NULL
WHERE admitted AND NOT paused
  AND run_at > zart_now() AND run_at <= zart_now() + make_interval(secs => %(lease)s)
  AND claimed_by IN (SELECT id FROM dead)
RETURNING id
"""

# Rows of workers that died without unregistering, kept a day for the record.
FORGET_DEAD_WORKERS = "DELETE FROM zart_workers WHERE heartbeat_at < zart_now() - interval '1 day'"

# -- claiming ------------------------------------------------------------------------------------------

# The claim: one statement per round, for every queue. It takes, up to `limit`:
#
# 1. `continuing`: ready tasks of executions that began (a range scan of zart_tasks_ready_idx, as
#    before queues existed); they already hold their queue slots.
# 2. with the room left, executions that begin now (`chosen`), queue by queue: in each queue with
#    executions due, the first ones by (priority, due time), as many as the queue's limits allow:
#    concurrency minus its admitted workflow tasks (its slots in use), the rate minus its admissions
#    in the last period (the queue row's log), and per key, per_key minus the key's slots in use,
#    keys taking turns (the one that began an execution longest ago first: zart_queue_keys).
#
# Limits hold across processes because one claimer at a time admits into a limited queue: `locked`
# takes the queue's row FOR UPDATE SKIP LOCKED, and an admitting claim bumps its `version`. The counts
# are read from this statement's snapshot; the locked row is the newest version (READ COMMITTED
# re-reads a row it locks). If the two versions differ, another claimer admitted into the queue after
# our snapshot was taken, so our counts are stale: the queue is skipped this round. A skipped queue
# with work due adds one row of NULLs to the answer, which tells the claimer to look again soon.
# A slot is released by deleting the admitted workflow task in the execution's final transaction
# (DELETE_EXECUTION_TASKS): no write of its own. A dead worker's tasks stay admitted, so its
# executions keep their slots until another worker takes them over with their leases.
#
# Beginning an execution also marks it running, sets started_at (the moment the rate counts) and its
# deadline (a workflow timeout runs from the begin, not while it queues). That moment is the
# statement's start, not the transaction's (`zart_now()`): the statement's snapshot, taken just after it,
# is what saw the slot free, so an execution's begin never precedes the end that made room for it.
CLAIM_TASKS = """
WITH RECURSIVE continuing AS (
    -- Ready tasks, and timers due within the lookahead (claimed ahead: the execution waits for
    -- its moment in the worker); a range of zart_tasks_ready_idx either way. Claimed tasks (run_at is
    -- their lease's end) are never taken ahead of their lease.
    SELECT id, run_at AS due FROM zart_tasks
    WHERE admitted AND NOT paused AND run_at <= zart_now() + make_interval(secs => %(lookahead)s)
      AND (run_at <= zart_now() OR (timer AND claimed_by IS NULL))
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), room AS MATERIALIZED (
    SELECT %(limit)s::int - count(*)::int AS n FROM continuing
), due AS MATERIALIZED (
    SELECT q.name, q.limited, q.version, q.concurrency, q.per_key, q.rate_limit, q.rate_period,
           q.admitted_at, q.admitted_n
    FROM zart_queues q
    -- One index probe per queue (LIMIT 1 keeps the planner from turning this into a semi-join that
    -- reads every waiting task of every queue).
    CROSS JOIN LATERAL (SELECT 1 FROM zart_tasks t
                        WHERE t.queue = q.name AND NOT t.admitted AND t.run_at <= zart_now() LIMIT 1) waiting
    WHERE (SELECT n FROM room) > 0
), locked AS MATERIALIZED (
    SELECT q.name, q.version FROM zart_queues q
    WHERE q.name IN (SELECT name FROM due WHERE limited)
    ORDER BY q.name
    FOR UPDATE SKIP LOCKED
), open AS MATERIALIZED (
    SELECT d.name, d.per_key,
           least((SELECT n FROM room),
                 CASE WHEN d.concurrency IS NULL THEN 2147483647
                      ELSE d.concurrency - (SELECT count(*) FROM zart_tasks t
                                            WHERE t.queue = d.name AND t.admitted AND t.kind = 'workflow')
                 END,
                 CASE WHEN d.rate_limit IS NULL THEN 2147483647
                      ELSE d.rate_limit - (
                          SELECT coalesce(sum(a.n), 0) FROM unnest(d.admitted_at, d.admitted_n) AS a(at, n)
                          WHERE a.at > zart_statement_time() - make_interval(secs => d.rate_period))
                 END)::int AS free
    FROM due d LEFT JOIN locked l ON l.name = d.name
    WHERE NOT d.limited OR l.version = d.version
), keys AS (
    -- The keys of per_key queues with executions waiting, by a skip scan of zart_tasks_queued_keys_idx
    -- (one index probe per key, however long each key's backlog). Executions started without a key
    -- have the key '' (their tasks' queue_key): they share one key's room.
    SELECT o.name AS queue,
           (SELECT t.queue_key FROM zart_tasks t
            WHERE t.queue = o.name AND NOT t.admitted
            ORDER BY t.queue_key LIMIT 1) AS key
    FROM open o WHERE o.per_key IS NOT NULL AND o.free > 0
    UNION ALL
    SELECT k.queue,
           (SELECT t.queue_key FROM zart_tasks t
            WHERE t.queue = k.queue AND NOT t.admitted AND t.queue_key > k.key
            ORDER BY t.queue_key LIMIT 1)
    FROM keys k WHERE k.key IS NOT NULL
), turns_due AS (
    -- Keys in turn order: the one that began an execution longest ago (or never) first.
    SELECT k.queue, k.key, o.per_key, o.free, kt.last_begun_at AS turn
    FROM keys k JOIN open o ON o.name = k.queue
    LEFT JOIN zart_queue_keys kt ON kt.queue = k.queue AND kt.key = k.key
    WHERE k.key IS NOT NULL
    ORDER BY kt.last_begun_at NULLS FIRST, k.key
), candidates AS (
    SELECT c.id, c.queue, c.priority, c.run_at, NULL::timestamptz AS turn, c.execution_id, c.queue_key
    FROM open o CROSS JOIN LATERAL (
        SELECT t.id, t.queue, t.priority, t.run_at, t.execution_id, t.queue_key FROM zart_tasks t
        WHERE t.queue = o.name AND NOT t.admitted AND t.run_at <= zart_now() AND NOT t.paused
        ORDER BY t.priority, t.run_at
        LIMIT greatest(o.free, 0)
        FOR UPDATE SKIP LOCKED) c
    WHERE o.per_key IS NULL
    UNION ALL
    -- Each key's first executions, as many as it has room for, keys in turn order; no more than the
    -- claim can take, so that a queue of many tenants costs a probe per key, not a scan per key.
    (SELECT c.id, c.queue, c.priority, c.run_at, k.turn, c.execution_id, c.queue_key
     FROM turns_due k CROSS JOIN LATERAL (
         SELECT t.id, t.queue, t.priority, t.run_at, t.execution_id, t.queue_key FROM zart_tasks t
         WHERE t.queue = k.queue AND t.queue_key = k.key AND NOT t.admitted AND t.run_at <= zart_now()
           AND NOT t.paused
         ORDER BY t.priority, t.run_at
         LIMIT greatest(least(k.free, k.per_key - (SELECT count(*) FROM zart_tasks x
                                                   WHERE x.queue = k.queue AND x.queue_key = k.key
                                                     AND x.admitted AND x.kind = 'workflow')), 0)
         FOR UPDATE SKIP LOCKED) c
     LIMIT (SELECT n FROM room))
), chosen AS MATERIALIZED (
    SELECT x.id, x.queue, x.execution_id, x.queue_key FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.queue
                                       ORDER BY c.turn NULLS FIRST, c.priority, c.run_at) AS place
        FROM candidates c) x
    JOIN open o ON o.name = x.queue
    WHERE x.place <= o.free
    ORDER BY x.priority, x.run_at
    LIMIT (SELECT n FROM room)
), began AS (
    -- By primary key only: a join here was planned, from a fresh table's statistics, as a nested
    -- loop of every pending execution over a scan of every task (seconds per claim at 3,000). And
    -- `status || ''` keeps zart_execution_runs_status_idx out of it: a generic plan made while the
    -- table was empty read every pending execution through that index to find the chosen few
    -- (5 ms per claim with 3,000 pending, growing with the backlog).
    UPDATE zart_execution_runs r
    SET status = 'running', started_at = zart_statement_time(), updated_at = zart_now(),
        deadline_at = zart_statement_time() + make_interval(secs => r.timeout_seconds)
    WHERE r.id = ANY(ARRAY(SELECT execution_id FROM chosen)) AND r.status || '' = 'pending'
), counted AS (
    UPDATE zart_queues q
    SET version = q.version + 1,
        admitted_at = CASE WHEN q.rate_period IS NULL THEN '{}' ELSE
            array(SELECT a.at FROM unnest(q.admitted_at, q.admitted_n) WITH ORDINALITY AS a(at, n, i)
                  WHERE a.at > zart_statement_time() - make_interval(secs => q.rate_period) ORDER BY a.i)
            || zart_statement_time() END,
        admitted_n = CASE WHEN q.rate_period IS NULL THEN '{}' ELSE
            array(SELECT a.n FROM unnest(q.admitted_at, q.admitted_n) WITH ORDINALITY AS a(at, n, i)
                  WHERE a.at > zart_statement_time() - make_interval(secs => q.rate_period) ORDER BY a.i)
            || g.n END
    FROM (SELECT queue, count(*)::int AS n FROM chosen GROUP BY queue) g
    WHERE q.name = g.queue AND q.limited
), turns AS (
    INSERT INTO zart_queue_keys (queue, key, last_begun_at)
    SELECT DISTINCT c.queue, c.queue_key, zart_now()
    FROM chosen c JOIN open o ON o.name = c.queue
    WHERE o.per_key IS NOT NULL AND c.queue_key IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET last_begun_at = excluded.last_begun_at
), claimed AS (
    UPDATE zart_tasks t
    SET run_at = zart_now() + make_interval(secs => %(lease)s),
        claimed_by = %(worker)s,
        claims = t.claims + 1,
        admitted = true
    FROM zart_execution_runs r,
         (SELECT id, due FROM continuing UNION ALL SELECT id, NULL FROM chosen) d
    WHERE t.id = ANY(ARRAY(SELECT id FROM continuing UNION ALL SELECT id FROM chosen))
      AND r.id = t.execution_id AND d.id = t.id
    RETURNING t.id, t.claims, t.execution_id, t.kind, r.workflow,
              CASE WHEN r.status = 'pending' AND t.id IN (SELECT id FROM chosen) THEN 'running'
                   ELSE r.status END AS status,
              r.input::text AS input,
              -- Times left count from `zart_clock()`, the moment the row is made, not from the
              -- statement's start: the worker counts them from the answer's arrival, so a claim that
              -- took milliseconds does not make its timers come due that much late (zart.claimer).
              -- A deadline is set when the execution begins (`began`; this row is the one from before).
              coalesce(extract(epoch FROM r.deadline_at - zart_clock())::float8, r.timeout_seconds)
                  AS seconds_left,
              t.step_key, t.payload::text AS payload, t.seq, t.grp,
              -- a timer taken ahead: seconds until its moment (0: due now), and the moment itself,
              -- which the worker places on its own clock more tightly when it can (zart.dbclock)
              greatest(extract(epoch FROM d.due - zart_clock())::float8, 0) AS seconds_to_due,
              extract(epoch FROM d.due)::float8 AS due_epoch,
              -- Begun by this claim and never before (the row from before `began`): no checkpoint
              -- and no attempt to load, so the claimer reads no history for it (a start's wake-up).
              t.id IN (SELECT id FROM chosen) AND r.started_at IS NULL AS fresh,
              -- Events delivered and not consumed yet, to load for the replay: one probe of
              -- zart_events_pending_idx per row (as EXISTS, the planner hashed every pending event).
              t.kind = 'workflow' AND coalesce((SELECT true FROM zart_events e
                                                WHERE e.execution_id = t.execution_id
                                                  AND e.consumed_by IS NULL LIMIT 1), false)
                  AS events_waiting,
              -- a child execution (zart.child): its end records its outcome in this parent
              r.parent_id,
              -- the trace context its starter stored (zart.tracing)
              r.trace_context
)
SELECT * FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL
WHERE EXISTS (SELECT 1 FROM due d LEFT JOIN locked l ON l.name = d.name
              WHERE d.limited AND (l.name IS NULL OR l.version <> d.version))
"""

# Tasks whose execution row is gone (pruned or never written): nothing can run them.
DELETE_ORPHAN_TASKS = """
DELETE FROM zart_tasks t
WHERE t.run_at <= zart_now() AND t.admitted AND NOT t.paused
  AND NOT EXISTS (SELECT 1 FROM zart_execution_runs r WHERE r.id = t.execution_id)
"""

# When the claimer should look again if nothing is ready: the earliest run_at of a begun execution's
# task (a timer, a retry, a lease that may lapse; tasks parked at 'infinity' wait for an event and
# need no timer), of a delayed start, and the moment a rate-limited queue with executions due gets
# room again (its oldest admission in the window leaves it). A queue blocked by its concurrency
# needs no timer: the end of an execution that frees a slot sends a NOTIFY.
# A reading of the database's clock (zart.dbclock), alone: no write, no commit to wait for.
DATABASE_CLOCK = "SELECT extract(epoch FROM zart_clock())::float8"

SECONDS_TO_NEXT_RUN_AT = """
SELECT extract(epoch FROM least(
    -- a timer (sql.RELEASE_TASKS) is looked for one lookahead before its moment
    (SELECT CASE WHEN timer AND claimed_by IS NULL THEN run_at - make_interval(secs => %(lookahead)s)
                 ELSE run_at END
     FROM zart_tasks WHERE admitted AND NOT paused AND run_at < 'infinity' ORDER BY run_at LIMIT 1),
    -- (a child parked in its zart.map window, at 'infinity', waits for a sibling's end, not a time)
    (SELECT min(run_at) FROM zart_tasks WHERE NOT admitted AND run_at > zart_now() AND run_at < 'infinity'),
    (SELECT min(a.at + make_interval(secs => q.rate_period))
     FROM zart_queues q CROSS JOIN LATERAL unnest(q.admitted_at, q.admitted_n) AS a(at, n)
     CROSS JOIN LATERAL (SELECT 1 FROM zart_tasks t
                         WHERE t.queue = q.name AND NOT t.admitted AND t.run_at <= zart_now() LIMIT 1) waiting
     WHERE q.rate_period IS NOT NULL AND a.at > zart_now() - make_interval(secs => q.rate_period))
) - zart_now())::float8
"""

# History of the claimed executions, loaded once per claim (never per step). Each (execution, key)
# pair asks for one execution's whole history (key NULL: a workflow task, which replays it) or for
# one step's checkpoint only (a branch task, which needs nothing else: loading the whole history for
# each of a zart.map's N branches would make the map cost N^2). wake_in: seconds from now (by the
# database's clock) to the deadline of a sleep or an event wait. The pair's key comes back first, so
# the caller files each row under the pair that asked for it.
SELECT_HISTORY = """
SELECT s.execution_id, f.step_key, s.step_key, s.seq, s.kind, s.status, s.output::text,
       s.error::text, extract(epoch FROM s.wake_at - zart_now())::float8
FROM unnest(%(ids)s::text[], %(keys)s::text[]) AS f(execution_id, step_key)
JOIN zart_steps s ON s.execution_id = f.execution_id
                 AND (f.step_key IS NULL OR s.step_key = f.step_key)
ORDER BY s.execution_id, s.seq
"""

# Events delivered and not consumed yet, in the order sent.
SELECT_PENDING_EVENTS = """
SELECT execution_id, id, name, payload::text
FROM zart_events WHERE execution_id = ANY(%(ids)s::text[]) AND consumed_by IS NULL
ORDER BY execution_id, id
"""

# The last attempt of every step that has no checkpoint yet (of the whole execution, or of one step:
# the same pairs as SELECT_HISTORY): its number, whether it is still open (the worker running it
# died), how many attempts failed (the retry budget spent; attempts abandoned by a dying worker do
# not count), and how many died with their worker (open ones included): the poison-pill count.
SELECT_OPEN_ATTEMPTS = """
SELECT a.execution_id, f.step_key, a.step_key, max(a.attempt), bool_or(a.outcome IS NULL),
       count(*) FILTER (WHERE a.counts AND a.outcome IN ('failed', 'timed_out')),
       count(*) FILTER (WHERE a.counts AND (a.outcome IS NULL
                                            OR (a.outcome = 'abandoned' AND a.error_type = 'WorkerLost')))
FROM unnest(%(ids)s::text[], %(keys)s::text[]) AS f(execution_id, step_key)
JOIN zart_step_attempts a ON a.execution_id = f.execution_id
                         AND (f.step_key IS NULL OR a.step_key = f.step_key)
WHERE NOT EXISTS (SELECT 1 FROM zart_steps s
                  WHERE s.execution_id = a.execution_id AND s.step_key = a.step_key)
GROUP BY a.execution_id, f.step_key, a.step_key
"""

# -- leases --------------------------------------------------------------------------------------------

# Extends the leases of tasks this worker still holds; a task missing from RETURNING was taken over
# (its lease lapsed and another worker claimed it: the fencing token `claims` no longer matches),
# or is no longer claimed (finished, or handed back to sleep or wait: its run_at must stay).
EXTEND_LEASES = """
UPDATE zart_tasks t
SET run_at = zart_now() + make_interval(secs => %(lease)s)
FROM unnest(%(ids)s::bigint[], %(claims)s::int[]) AS held(id, claims)
WHERE t.id = held.id AND t.claims = held.claims AND t.claimed_by = %(worker)s
RETURNING t.id
"""

# Hands tasks back, each to run again after its delay ('Infinity': only an event or its branches wake
# it). Only a task this worker still holds: the token alone is not enough, since a task the completer
# just parked (claimed_by NULL) keeps its token, and releasing it again at shutdown would wake a
# sleep or a parked fan-out early. A task released to wait for an event runs again at once if that
# event is already there (it may have been delivered while the worker ran the execution: see
# LOCK_EXECUTION_TASK), and one released to wait for its branches runs again at once if none is
# left (see WAKE_FANNED_IN). When a task released runs again now, the statement wakes the claimers
# itself (a row back): the completer queues it with the rest of its batch and reads nothing back.
# A child of this execution it still waits for (zart.child): a probe of zart_steps_waiting_children_idx.
_WAITING_CHILD = """SELECT 1 FROM zart_steps x
    WHERE x.execution_id = {parent} AND x.kind = 'child' AND x.status = 'waiting'"""

RELEASE_TASKS = f"""
WITH released AS (
UPDATE zart_tasks t
SET run_at = CASE
        WHEN f.event IS NOT NULL AND EXISTS (
            SELECT 1 FROM zart_events e
            WHERE e.execution_id = t.execution_id AND e.name = f.event AND e.consumed_by IS NULL)
        THEN zart_now()
        WHEN f.branches AND NOT EXISTS (
            SELECT 1 FROM zart_tasks b WHERE b.execution_id = t.execution_id AND b.kind = 'step')
                        AND NOT EXISTS ({_WAITING_CHILD.format(parent="t.execution_id")})
        THEN zart_now()
        WHEN f.delay = 'Infinity'::float8 THEN 'infinity'::timestamptz
        ELSE zart_now() + make_interval(secs => f.delay)
    END,
    -- a fixed moment only the clock changes: the claim may take it ahead (CLAIM_TASKS's lookahead)
    timer = f.event IS NULL AND NOT f.branches AND f.delay < 'Infinity'::float8,
    claimed_by = NULL
FROM unnest(%(ids)s::bigint[], %(claims)s::int[], %(delays)s::float8[], %(events)s::text[],
            %(branches)s::bool[])
     AS f(id, claims, delay, event, branches)
WHERE t.id = f.id AND t.claims = f.claims AND t.claimed_by = %(worker)s
RETURNING t.run_at <= zart_now() AS ready
)
SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) FROM released WHERE ready LIMIT 1
"""

# Tasks claimed in this worker's name that it does not hold: a claim whose COMMIT landed but whose
# answer was lost (the connection dropped right after it), or a runner that ended without handing
# its task back. Ready again at once instead of after the lease. Claimed tasks have run_at within
# one lease from now, so the scan is a range of zart_tasks_ready_idx, not the sleeping backlog.
RELEASE_STRANDED = """
UPDATE zart_tasks SET run_at = zart_now(), claimed_by = NULL
WHERE admitted AND NOT paused
  AND run_at > zart_now() AND run_at <= zart_now() + make_interval(secs => %(lease)s)
  AND claimed_by = %(worker)s AND NOT (id = ANY(%(held)s::bigint[]))
RETURNING id
"""

# At shutdown: the attempts this worker was running when it stopped. Closed as abandoned with
# error_type 'WorkerStopped' (not 'WorkerLost'), so a drain never counts towards the poison-pill limit.
STOP_ATTEMPTS = """
UPDATE zart_step_attempts a
SET outcome = 'abandoned', finished_at = zart_now(), error_type = 'WorkerStopped',
    error_message = 'the worker stopped (drain or shutdown) during this attempt; the step runs again'
FROM unnest(%(execution_ids)s::text[], %(step_keys)s::text[], %(attempts)s::int[])
     AS f(execution_id, step_key, attempt)
WHERE a.execution_id = f.execution_id AND a.step_key = f.step_key AND a.attempt = f.attempt
  AND a.outcome IS NULL AND a.worker_id = %(worker)s
"""

# -- the completer's batch -----------------------------------------------------------------------------

# A finished execution leaves no task behind (branches still queued when it timed out included), as
# two CTEs, `workflow_tasks` and `step_tasks`, for the executions in `{ids}` (a text[] expression).
# Split by kind (as PRUNE_BATCH is), so that each kind's partial index on execution_id serves its
# half: `WHERE execution_id = ANY(...)` alone matched no index and scanned the whole of zart_tasks on
# every finish (35 ms with 400,000 parked tasks). zart_tasks has only two kinds, 'workflow' and 'step'.
# And `= ANY(...)`, an index condition whatever the plan: with `IN (SELECT ...)` the generic plan
# made on a new database's empty tables read every workflow task of the index on every finish.
_END_TASKS = """workflow_tasks AS (
    DELETE FROM zart_tasks WHERE kind = 'workflow' AND execution_id = ANY({ids})
    RETURNING queue, admitted
), step_tasks AS (
    DELETE FROM zart_tasks WHERE kind = 'step' AND execution_id = ANY({ids})
)"""

# Deleting an admitted workflow task frees its queue slot; a row comes back when that slot was a
# limited queue's, and this wakes the claimers (an execution waiting for it may begin).
_FREED_SLOT_NOTIFY = f"""SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) FROM zart_queues q
WHERE q.limited AND q.name IN (SELECT queue FROM workflow_tasks WHERE admitted)
LIMIT 1"""

# The completer's batch as ONE statement, one round trip and (outside a transaction) one commit:
# PostgreSQL's cost per statement (parse, bind, executor start, a round trip) was most of a
# step's database time when each kind of write was a statement of its own.
#
# `held` is the fencing check: of the tasks the batch writes for, those this worker still holds
# (`claims` unchanged, still claimed by it), their rows locked in id order (so two completers cannot
# deadlock, and a claim, a cancel or an event's delivery that locks the row waits for the batch, or
# the batch for it). A row lock only, not a new row version: the heartbeat renews the leases
# (EXTEND_LEASES); an UPDATE of `run_at` (an indexed column) here cost a new version of the task row
# and an entry in each of its indexes for every step. Every write below reads its rows from `kept`,
# the fragments whose task passed the check, so a worker that lost its lease writes nothing.
#
# %(fragments)s holds one JSON array per fragment: [task id, execution id, attempt ends, attempt
# starts, steps, the execution's status change or null, whether its tasks go (the execution is
# over)]. Parsed once (`->>` on `json` would re-read the text for every field), and written by
# orjson in one call: psycopg adapts a list parameter element by element in Python.
#
# The writes share one snapshot, so only writes that do not read each other's effects belong here:
# an attempt's start and its end are never in one batch (the start is durable before the step runs),
# and the writes that must see a row locked or inserted meanwhile (a release that looks for an event
# delivered while the batch waited, the attempts closed after the tasks' deletion, fan-in) are
# statements of their own after this one, in the same transaction.
#
# Steps: new checkpoints, and the completion of waits (sleeps, events) recorded earlier as 'waiting'.
# A wait's start and its deadline are both the database's clock (the commit's `zart_now()`), so that the
# recorded wait is exactly the duration asked for, whatever the worker's clock or the batch's delay.
# Runs: started_at is set once; result, error and finished_at only by the final transition.
# A finished execution leaves no task behind, and deleting an admitted workflow task frees its queue
# slot: the claimers are woken when that slot was a limited queue's (_END_TASKS, _FREED_SLOT_NOTIFY).
# Returns the ids of the tasks still held, and (fourth) those of them whose execution is paused: their
# runners stop after this commit (zart.journal), the step in flight checkpointed, nothing more run.
_WRITE_BATCH_WRITES = f"""
WITH held AS MATERIALIZED (
    SELECT t.id, t.paused FROM zart_tasks t
    JOIN unnest(%(ids)s::bigint[], %(claims)s::int[]) AS h(id, claims) ON h.id = t.id
    WHERE t.claims = h.claims AND t.claimed_by = %(worker)s
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
), kept AS MATERIALIZED (
    SELECT f->>1 AS execution_id, f->2 AS ends, f->3 AS starts, f->4 AS steps, f->5 AS run,
           (f->>6)::bool AS over, f->>7 AS parent, f->8 AS children
    FROM jsonb_array_elements(%(fragments)s::jsonb) AS f
    WHERE (f->>0)::bigint IN (SELECT id FROM held)
), attempts_ended AS (
    UPDATE zart_step_attempts a
    SET finished_at = e.finished_at, outcome = e.outcome, error_type = e.error_type,
        error_message = e.error_message, traceback = e.traceback
    FROM (SELECT k.execution_id, r->>0 AS step_key, (r->>1)::int AS attempt,
                 (r->>2)::timestamptz AS finished_at, r->>3 AS outcome, r->>4 AS error_type,
                 r->>5 AS error_message, r->>6 AS traceback
          FROM kept k, jsonb_array_elements(k.ends) AS r) e
    WHERE a.execution_id = e.execution_id AND a.step_key = e.step_key AND a.attempt = e.attempt
), attempts_started AS (
    INSERT INTO zart_step_attempts (execution_id, step_key, attempt, worker_id, started_at)
    SELECT k.execution_id, r->>0, (r->>1)::int, %(worker)s, (r->>2)::timestamptz
    FROM kept k, jsonb_array_elements(k.starts) AS r
    ON CONFLICT DO NOTHING
), steps AS (
    INSERT INTO zart_steps (execution_id, step_key, seq, kind, status, output, error, attempts,
                            started_at, finished_at, wake_at)
    SELECT s.execution_id, s.step_key, s.seq, s.kind, s.status, s.output::json, s.error::json,
           s.attempts, CASE WHEN s.wake_in IS NULL THEN s.started_at ELSE zart_now() END, s.finished_at,
           zart_now() + make_interval(secs => s.wake_in)
    FROM (SELECT k.execution_id, r->>0 AS step_key, (r->>1)::int AS seq, r->>2 AS kind,
                 r->>3 AS status, r->>4 AS output, r->>5 AS error, (r->>6)::int AS attempts,
                 (r->>7)::timestamptz AS started_at, (r->>8)::timestamptz AS finished_at,
                 (r->>9)::float8 AS wake_in
          FROM kept k, jsonb_array_elements(k.steps) AS r) s
    ON CONFLICT (execution_id, step_key) DO UPDATE
    SET status = excluded.status, output = excluded.output, error = excluded.error,
        finished_at = excluded.finished_at
), runs AS (
    UPDATE zart_execution_runs r
    SET status = x.status,
        result = coalesce(x.result::json, r.result),
        error = coalesce(x.error::json, r.error),
        started_at = coalesce(r.started_at, x.started_at),
        finished_at = coalesce(x.finished_at, r.finished_at),
        updated_at = zart_now()
    FROM (SELECT k.execution_id AS id, k.run->>0 AS status, k.run->>1 AS result,
                 k.run->>2 AS error, (k.run->>3)::timestamptz AS started_at,
                 (k.run->>4)::timestamptz AS finished_at
          FROM kept k WHERE jsonb_typeof(k.run) = 'array') x
    WHERE r.id = x.id
), {_END_TASKS.format(ids="ARRAY(SELECT execution_id FROM kept WHERE over)")}"""

_WRITE_BATCH_ANSWER = f"""
SELECT array(SELECT id FROM held),
       (SELECT count(*) FROM (SELECT pg_notify('{DONE_CHANNEL}', {
    _DONE_PAYLOAD.format(id="k.execution_id", status="k.run->>0", result="k.run->>1", error="k.run->>2")
})
                              FROM kept k WHERE k.over) n),
       (SELECT count(*) FROM ({_FREED_SLOT_NOTIFY}) m),
       array(SELECT id FROM held WHERE paused)"""

WRITE_BATCH = _WRITE_BATCH_WRITES + _WRITE_BATCH_ANSWER + "\n"

# A batch whose first try's COMMIT may have landed with its answer lost (the connection dropped: a
# failover, a restart) is tried again; its fragments that end their run (the execution's end, a
# branch's end, a hand-back) then find their task gone or no longer claimed, and count as lost,
# though it was their own first try that ended it. Which of them did land, by what that try leaves:
# the execution's final status, every history entry the fragment wrote, or (a hand-back with
# neither) the task unclaimed at the same fencing token. Read-only; run only after such a retry.
# One element per fragment: [task id, claims, execution id, final status or null, [step keys]].
CONFIRM_LANDED = """
SELECT (f->>0)::bigint
FROM jsonb_array_elements(%(fragments)s::jsonb) AS f
WHERE (f->>3 IS NULL OR EXISTS (
           SELECT 1 FROM zart_execution_runs r WHERE r.id = f->>2 AND r.status = f->>3))
  AND NOT EXISTS (
           SELECT 1 FROM jsonb_array_elements_text(f->4) AS k(step_key)
           WHERE NOT EXISTS (SELECT 1 FROM zart_steps s
                             WHERE s.execution_id = f->>2 AND s.step_key = k.step_key))
  AND (f->>3 IS NOT NULL OR jsonb_array_length(f->4) > 0 OR EXISTS (
           SELECT 1 FROM zart_tasks t
           WHERE t.id = (f->>0)::bigint AND t.claims = (f->>1)::int AND t.claimed_by IS NULL))
"""

# -- streams (zart.emit, zart.streams) ---------------------------------------------------------------

# Emitted values, in the completer's transaction with the history entries that record their emits
# (fenced: only the fragments WRITE_BATCH kept). A value's key is fixed by the workflow's code, so a
# retried batch or a replay can never append it twice. The NOTIFY is delivered with the COMMIT.
INSERT_STREAM_VALUES = f"""
WITH added AS (
    INSERT INTO zart_streams (execution_id, stream, seq, value)
    SELECT v.execution_id, v.stream, v.seq, v.value::json
    FROM unnest(%(execution_ids)s::text[], %(streams)s::text[], %(seqs)s::int[], %(values)s::text[])
        AS v(execution_id, stream, seq, value)
    ORDER BY v.execution_id, v.stream, v.seq
    ON CONFLICT DO NOTHING
    RETURNING execution_id, stream
)
SELECT pg_notify('{STREAM_CHANNEL}', json_build_array(a.execution_id, a.stream)::text)
FROM (SELECT DISTINCT execution_id, stream FROM added) a
"""

# A reader's next values of one stream (after `after`), with the execution's status read in the
# same snapshot: once that status is terminal, every value the execution emitted is in the snapshot.
# No row: no such execution. One row with a NULL seq: no value after `after` yet.
SELECT_STREAM_VALUES = """
SELECT r.status, v.seq, v.value::text, v.created_at
FROM zart_execution_runs r
LEFT JOIN LATERAL (
    SELECT seq, value, created_at FROM zart_streams
    WHERE execution_id = r.id AND stream = %(stream)s AND seq > %(after)s
    ORDER BY seq LIMIT %(limit)s
) v ON true
WHERE r.id = %(id)s
ORDER BY v.seq
"""

# `zart show`: each stream's count and last few values.
SELECT_STREAM_TAILS = """
SELECT v.stream, v.seq, v.value::text, c.total
FROM (SELECT stream, max(seq) AS total FROM zart_streams WHERE execution_id = %(id)s GROUP BY stream) c
JOIN LATERAL (
    SELECT stream, seq, value FROM zart_streams
    WHERE execution_id = %(id)s AND stream = c.stream
    ORDER BY seq DESC LIMIT %(limit)s
) v ON true
ORDER BY v.stream, v.seq
"""

CONSUME_EVENTS = """
UPDATE zart_events e SET consumed_by = f.step_key, consumed_at = zart_now()
FROM unnest(%(ids)s::bigint[], %(step_keys)s::text[]) AS f(id, step_key)
WHERE e.id = f.id AND e.consumed_by IS NULL
"""

# Every attempt of an execution still open when it ended (a workflow timeout cut its branches
# short on other workers): they will never report, since their tasks are gone.
CLOSE_OPEN_ATTEMPTS = """
UPDATE zart_step_attempts a
SET outcome = f.outcome, finished_at = zart_now(), error_type = f.error_type, error_message = f.error_message
FROM unnest(%(execution_ids)s::text[], %(outcomes)s::text[], %(error_types)s::text[],
            %(error_messages)s::text[]) AS f(execution_id, outcome, error_type, error_message)
WHERE a.execution_id = f.execution_id AND a.outcome IS NULL
"""

DELETE_TASKS = "DELETE FROM zart_tasks WHERE id = ANY(%(ids)s::bigint[])"

# A finished execution leaves no task behind (its statement: _END_TASKS, _FREED_SLOT_NOTIFY).
DELETE_EXECUTION_TASKS = f"""
WITH {_END_TASKS.format(ids="%(ids)s::text[]")}
{_FREED_SLOT_NOTIFY}
"""

# -- fan-out and fan-in (zart.parallel, zart.map) -----------------------------------------------------

# Branches are inserted in the same transaction that parks the workflow task, so none can finish
# before the workflow is parked. Re-inserting on replay is a no-op, and a branch whose checkpoint
# exists is not inserted again: a replay that loaded its history before that branch finished (the
# workflow task woken early) must not run it twice. The batch locked the workflow task first
# (WRITE_BATCH), as every branch's fan-in does, so this statement sees every branch committed
# before it.
INSERT_BRANCH_TASKS = """
INSERT INTO zart_tasks (execution_id, kind, step_key, payload, seq, grp, run_at)
SELECT f.execution_id, 'step', f.step_key, f.payload::json, f.seq, f.grp,
       CASE WHEN f.ready THEN zart_now() ELSE 'infinity'::timestamptz END
FROM unnest(%(execution_ids)s::text[], %(step_keys)s::text[], %(payloads)s::text[], %(seqs)s::int[],
            %(grps)s::int[], %(readies)s::bool[])
     AS f(execution_id, step_key, payload, seq, grp, ready)
WHERE NOT EXISTS (SELECT 1 FROM zart_steps s
                  WHERE s.execution_id = f.execution_id AND s.step_key = f.step_key)
ON CONFLICT (execution_id, step_key) WHERE kind = 'step' DO NOTHING
"""

# Fan-in serialises on the workflow task's row: every batch that finishes a branch locks it (with
# its own tasks, in id order, so batches cannot deadlock) before deciding whether it finished the
# last branch. Two branches finishing at the same moment in two processes therefore see each
# other's deletion, and exactly one of them wakes the workflow.
LOCK_TASKS_FOR_FAN_IN = """
SELECT id FROM zart_tasks
WHERE id = ANY(%(ids)s::bigint[])
   OR (kind = 'workflow' AND execution_id = ANY(%(execution_ids)s::text[]))
ORDER BY id
FOR UPDATE
"""

# zart.map's window: each finished branch readies the next parked branch of its fan-out, and wakes
# the claimers when it did.
READY_PARKED_BRANCHES = f"""
WITH readied AS (
UPDATE zart_tasks t SET run_at = zart_now()
FROM (SELECT p.id
      FROM unnest(%(execution_ids)s::text[], %(grps)s::int[], %(counts)s::int[]) AS f(execution_id, grp, n)
      CROSS JOIN LATERAL (
          SELECT x.id FROM zart_tasks x
          WHERE x.execution_id = f.execution_id AND x.grp = f.grp AND x.kind = 'step'
            AND x.run_at = 'infinity'
          ORDER BY x.id LIMIT f.n
          FOR UPDATE SKIP LOCKED) p) picked
WHERE t.id = picked.id
RETURNING t.id
)
SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) FROM readied LIMIT 1
"""

WAKE_FANNED_IN = f"""
WITH woken AS (
UPDATE zart_tasks w SET run_at = zart_now()
WHERE w.kind = 'workflow' AND w.execution_id = ANY(%(execution_ids)s::text[])
  AND w.claimed_by IS NULL
  AND NOT EXISTS (SELECT 1 FROM zart_tasks b WHERE b.execution_id = w.execution_id AND b.kind = 'step')
  AND NOT EXISTS ({_WAITING_CHILD.format(parent="w.execution_id")})
RETURNING w.id
)
SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) FROM woken LIMIT 1
"""

# -- child workflows (zart.child, zart.map over a workflow; zart.children) ------------------------------

_TERMINAL = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES)) + ")"

# A child's failure as its parent's entry records it (zart.ChildFailed).
_CHILD_FAILURE = """json_build_object(
                'type', 'ChildFailed',
                'message', 'child execution ' || {e}.id || ' ' || replace({e}.status, '_', ' ')
                           || coalesce(': ' || ({e}.error->>'type') || ': ' || ({e}.error->>'message'), ''),
                'traceback', coalesce({e}.error->>'traceback', ''),
                'child_id', {e}.id, 'child_status', {e}.status, 'child_error', {e}.error)"""

# A child's outcome written into its parent's `waiting` entry, from the ended child `e` (its status,
# result and error as json): FINISH_CHILDREN and WRITE_BATCH_WITH_CHILDREN, the two ways a child ends.
_RECORD_CHILD_OUTCOME = f"""SET status = CASE WHEN e.status = 'completed' THEN 'completed' ELSE 'failed' END,
        output = CASE WHEN e.status = 'completed' THEN e.result END,
        error = CASE WHEN e.status <> 'completed' THEN {_CHILD_FAILURE.format(e="e")} END,
        finished_at = zart_now()"""

# Children start in the transaction of the parent's commit that records them (its 'waiting' entries,
# written by WRITE_BATCH just before; fenced: only the fragments WRITE_BATCH kept): started exactly
# once, since a replay finds the entries and starts nothing, and a batch retried after an unknown
# outcome finds the rows (ON CONFLICT DO NOTHING). A zart.map window starts its first `window`
# children ready and parks the others at 'infinity' (FINISH_CHILDREN readies them one by one).
# An id held by an execution that is not this very child (`id=` given twice, or taken by a start)
# fails the parent's entry at once with ChildFailed; the same child found already ended (the parent
# was resumed and reached it again) gives its outcome at once. Runs before RELEASE_TASKS, which then
# sees whether any child is left to wait for. (Children the parent's worker runs at once are started
# by WRITE_BATCH_WITH_CHILDREN instead, begun and claimed by that worker; the ones it could not
# create come back here.)
START_CHILDREN = f"""
WITH c AS (
    SELECT * FROM unnest(%(ids)s::text[], %(workflows)s::text[], %(inputs)s::text[],
                         %(timeouts)s::float8[], %(queues)s::text[], %(keys)s::text[],
                         %(priorities)s::int[], %(traces)s::text[], %(parent_ids)s::text[],
                         %(parent_keys)s::text[], %(parent_groups)s::int[], %(parent_seqs)s::int[],
                         %(windows)s::int[])
        AS c(id, workflow, input, timeout, queue, key, priority, trace, parent_id, parent_key,
             parent_group, parent_seq, win)
), created AS (
    INSERT INTO zart_execution_runs (id, workflow, input, queue, queue_key, priority, timeout_seconds,
                                     parent_id, parent_key, parent_group, parent_seq, trace_context)
    SELECT id, workflow, input::json, queue, key, priority, timeout, parent_id, parent_key,
           parent_group, parent_seq, trace
    FROM c ORDER BY parent_id, parent_seq
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), declared AS (
    {_DECLARE_QUEUES}
), placed AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.parent_id, c.parent_group ORDER BY c.parent_seq) AS place
    FROM c WHERE c.id IN (SELECT id FROM created)
), tasks AS (
    INSERT INTO zart_tasks (execution_id, kind, queue, queue_key, priority, admitted, run_at)
    SELECT id, 'workflow', queue, coalesce(key, ''), priority, false,
           CASE WHEN place <= win THEN zart_now() ELSE 'infinity'::timestamptz END
    FROM placed
), found AS (
    -- the ids this statement did not create: whose they are, and how they ended if they did
    SELECT c.id, c.parent_id, c.parent_key, r.status, r.result, r.error,
           r.parent_id IS NOT DISTINCT FROM c.parent_id AND r.parent_key IS NOT DISTINCT FROM c.parent_key
               AS ours
    FROM c JOIN zart_execution_runs r ON r.id = c.id
    WHERE c.id NOT IN (SELECT id FROM created)
), settled AS (
    UPDATE zart_steps s
    SET status = CASE WHEN f.ours AND f.status = 'completed' THEN 'completed' ELSE 'failed' END,
        output = CASE WHEN f.ours AND f.status = 'completed' THEN f.result END,
        error = CASE
            WHEN NOT f.ours THEN json_build_object(
                'type', 'ChildFailed',
                'message', 'the child execution id ' || f.id || ' is taken by another execution '
                           || '(pass zart.child an id of its own, or none)',
                'traceback', '', 'child_id', f.id, 'child_status', 'not_started')
            WHEN f.status <> 'completed' THEN {_CHILD_FAILURE.format(e="f")}
        END,
        finished_at = zart_now()
    FROM found f
    WHERE s.execution_id = f.parent_id AND s.step_key = f.parent_key AND s.status = 'waiting'
      AND (NOT f.ours OR f.status IN {_TERMINAL})
)
SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) WHERE EXISTS (SELECT 1 FROM created)
"""

# Executions that just ended (their rows' final update is in), in the same transaction: each that is
# a child records its outcome in its parent's 'waiting' entry (a ChildFailed unless it completed),
# readies as many parked siblings of its zart.map window as ended children left it (a child still
# parked, cancelled, frees no place), and wakes the parent once no child of it and no branch is left
# to wait for. The parents' workflow tasks were locked first, in id order with the batch's own
# (LOCK_TASKS_FOR_FAN_IN): two siblings that end at once, in two processes, serialise there, so the
# window never loses a place and exactly one of them wakes the parent.


FINISH_CHILDREN = f"""
WITH ended AS MATERIALIZED (
    SELECT r.id, r.parent_id, r.parent_key, r.parent_group, r.status, r.result, r.error,
           EXISTS (SELECT 1 FROM zart_tasks t WHERE t.execution_id = r.id AND t.kind = 'workflow'
                                               AND t.run_at = 'infinity') AS parked
    FROM zart_execution_runs r
    WHERE r.id = ANY(%(ids)s::text[]) AND r.parent_id IS NOT NULL AND r.status IN {_TERMINAL}
), recorded AS (
    UPDATE zart_steps s
    {_RECORD_CHILD_OUTCOME}
    FROM ended e
    WHERE s.execution_id = e.parent_id AND s.step_key = e.parent_key AND s.status = 'waiting'
    RETURNING s.execution_id, s.step_key, e.parent_group, e.parked
), readied AS (
    UPDATE zart_tasks t SET run_at = zart_now()
    FROM (SELECT p.task_id
          FROM (SELECT execution_id, parent_group, count(*) FILTER (WHERE NOT parked) AS n
                FROM recorded GROUP BY execution_id, parent_group) g
          CROSS JOIN LATERAL (
              SELECT x.id AS task_id
              FROM zart_execution_runs c
              JOIN zart_tasks x ON x.execution_id = c.id AND x.kind = 'workflow'
              WHERE c.parent_id = g.execution_id AND c.parent_group = g.parent_group
                AND x.run_at = 'infinity'
              ORDER BY c.parent_seq LIMIT g.n) p) picked
    WHERE t.id = picked.task_id
    RETURNING t.id
), woken AS (
    UPDATE zart_tasks w SET run_at = zart_now()
    WHERE w.kind = 'workflow' AND w.execution_id IN (SELECT execution_id FROM recorded)
      AND w.claimed_by IS NULL AND w.run_at > zart_now()
      AND NOT EXISTS ({_WAITING_CHILD.format(parent="w.execution_id")}
                      AND (x.execution_id, x.step_key) NOT IN (SELECT execution_id, step_key FROM recorded))
      AND NOT EXISTS (SELECT 1 FROM zart_tasks b WHERE b.execution_id = w.execution_id AND b.kind = 'step')
    RETURNING w.id
)
SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY})
WHERE EXISTS (SELECT 1 FROM readied) OR EXISTS (SELECT 1 FROM woken)
"""

# WRITE_BATCH for a batch that starts or ends children run at once by their parent's worker
# (zart.branches: the parent waits for them in memory), still one statement and one round trip, on
# the completer's trio connection like any plain batch. Each fragment adds [7] the parent of the
# execution it ends, if that child was started so, and [8] the children it starts so: [id, workflow,
# input, timeout, queue, key, priority, trace context, parent key, fan-out, position, window, lease].
#
# Such a child is created begun and claimed by the parent's worker (no claim, no wake-up between the
# parent's commit and the child's first step), unless it is taken or its queue has limits in the
# database: then it is left out, and the answer's fifth column (the children created, with their
# task ids) tells the parent to start it the general way (START_CHILDREN). Its end records its
# outcome in the parent's entry and wakes the parent if it is parked (not held in memory by its
# worker any more: a lost lease, a stop): unconditionally, as one statement cannot see a sibling
# that ends at the same moment in another process; a parent woken early replays and parks again.
WRITE_BATCH_WITH_CHILDREN = (
    _WRITE_BATCH_WRITES
    + f""", child_ends AS MATERIALIZED (
    SELECT k.execution_id AS id, k.parent AS parent_id, r.parent_key, k.run->>0 AS status,
           (k.run->>1)::json AS result, (k.run->>2)::json AS error
    FROM kept k JOIN zart_execution_runs r ON r.id = k.execution_id
    WHERE k.over AND k.parent IS NOT NULL AND jsonb_typeof(k.run) = 'array'
), child_recorded AS (
    UPDATE zart_steps s
    {_RECORD_CHILD_OUTCOME}
    FROM child_ends e
    WHERE s.execution_id = e.parent_id AND s.step_key = e.parent_key AND s.status = 'waiting'
    RETURNING s.execution_id
), parent_woken AS (
    UPDATE zart_tasks w SET run_at = zart_now()
    WHERE w.kind = 'workflow' AND w.execution_id IN (SELECT execution_id FROM child_recorded)
      AND w.claimed_by IS NULL AND w.run_at > zart_now()
    RETURNING w.id
), child_starts AS MATERIALIZED (
    SELECT k.execution_id AS parent_id, r->>0 AS id, r->>1 AS workflow, r->>2 AS input,
           (r->>3)::float8 AS timeout, r->>4 AS queue, r->>5 AS key, (r->>6)::int AS priority,
           r->>7 AS trace, r->>8 AS parent_key, (r->>9)::int AS parent_group,
           (r->>10)::int AS parent_seq, (r->>12)::float8 AS lease
    FROM kept k, jsonb_array_elements(k.children) AS r
    WHERE NOT EXISTS (SELECT 1 FROM zart_queues q WHERE q.name = r->>4 AND q.limited)
), children_created AS (
    INSERT INTO zart_execution_runs (id, workflow, input, queue, queue_key, priority, timeout_seconds,
                                     parent_id, parent_key, parent_group, parent_seq, status,
                                     started_at, deadline_at, trace_context)
    SELECT id, workflow, input::json, queue, key, priority, timeout, parent_id, parent_key,
           parent_group, parent_seq, 'running', zart_statement_time(),
           zart_statement_time() + make_interval(secs => timeout), trace
    FROM child_starts ORDER BY parent_id, parent_seq
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), children_claimed AS (
    INSERT INTO zart_tasks (execution_id, kind, queue, queue_key, priority, admitted, run_at,
                            claimed_by, claims)
    SELECT c.id, 'workflow', c.queue, coalesce(c.key, ''), c.priority, true,
           zart_now() + make_interval(secs => c.lease), %(worker)s, 1
    FROM child_starts c WHERE c.id IN (SELECT id FROM children_created)
    RETURNING execution_id, id
), children_queues AS (
    {_DECLARE_QUEUES}
)"""
    + _WRITE_BATCH_ANSWER
    + f""",
       (SELECT json_agg(json_build_array(execution_id, id)) FROM children_claimed)::text,
       (SELECT count(*) FROM (SELECT pg_notify('{TASKS_CHANNEL}', {WAKE_KEY}) FROM parent_woken LIMIT 1) n)
"""
)

# The unfinished executions below these ones, to any depth (a child that ended has cancelled its own).
SELECT_DESCENDANTS = f"""
WITH RECURSIVE below AS (
    SELECT r.id FROM zart_execution_runs r
    WHERE r.parent_id = ANY(%(ids)s::text[]) AND r.status NOT IN {_TERMINAL}
    UNION
    SELECT r.id FROM zart_execution_runs r JOIN below b ON r.parent_id = b.id
    WHERE r.status NOT IN {_TERMINAL}
)
SELECT id FROM below
"""

# A cancel's locks, first and in id order (as every completer batch takes its own, and the parents'
# of the children it ends: LOCK_TASKS_FOR_FAN_IN): the workflow tasks of the executions cancelled,
# of their descendants, and of the parent of each (whose entry records the cancellation).
LOCK_FOR_CANCEL = """
SELECT t.id FROM zart_tasks t
WHERE t.kind = 'workflow'
  AND (t.execution_id = ANY(%(ids)s::text[])
       OR t.execution_id IN (SELECT parent_id FROM zart_execution_runs
                             WHERE id = ANY(%(ids)s::text[]) AND parent_id IS NOT NULL))
ORDER BY t.id
FOR UPDATE
"""

# Cancelling several executions at once (a parent's descendants), as CANCEL_EXECUTION does one.
CANCEL_EXECUTIONS = f"""
UPDATE zart_execution_runs
SET status = 'cancelled', finished_at = zart_now(), updated_at = zart_now(),
    error = json_build_object('type', 'Cancelled', 'message', %(reason)s::text, 'traceback', '')
WHERE id = ANY(%(ids)s::text[]) AND status NOT IN {_TERMINAL}
RETURNING id
"""

ABANDON_OPEN_ATTEMPTS_OF = """
UPDATE zart_step_attempts
SET outcome = 'abandoned', finished_at = zart_now(), error_type = 'Cancelled',
    error_message = 'the execution was cancelled during this attempt'
WHERE execution_id = ANY(%(ids)s::text[]) AND outcome IS NULL
"""

# `zart show` and GET /v1/executions/{id}: an execution's children, in the order the parent made them.
SELECT_CHILDREN = f"""
SELECT id, workflow, {_SHOWN_STATUS}, parent_key FROM zart_execution_runs
WHERE parent_id = %(id)s ORDER BY parent_group, parent_seq, id LIMIT %(limit)s
"""

SELECT_PARENT = "SELECT parent_id, parent_key FROM zart_execution_runs WHERE id = %(id)s"

# -- events ------------------------------------------------------------------------------------------

# Delivery and wake-up are one transaction. The execution's task row is locked FIRST: a worker that
# is suspending the execution to wait locks the same row first too (WRITE_BATCH opens every
# completer batch), so whichever commits second sees the other's work: either the worker's release
# sees this event and runs the task at once, or this transaction sees the released task and wakes it.
LOCK_EXECUTION_TASK = """
SELECT id FROM zart_tasks WHERE execution_id = %(id)s AND kind = 'workflow' FOR UPDATE
"""

SELECT_EXECUTION_FOR_EVENT = """
SELECT status FROM zart_execution_runs WHERE id = %(id)s FOR SHARE
"""

INSERT_EVENT = """
INSERT INTO zart_events (execution_id, name, payload, key)
VALUES (%(id)s, %(name)s, %(payload)s::json, %(key)s)
ON CONFLICT (execution_id, key) WHERE key IS NOT NULL DO NOTHING
RETURNING id
"""

# Wakes the execution only if it is parked on a wait for this very event (its `waiting` entry's key is
# `event:NAME#k`); an event it will wait for later stays stored until then.
WAKE_EXECUTION_TASK = """
UPDATE zart_tasks SET run_at = zart_now()
WHERE execution_id = %(id)s AND kind = 'workflow' AND claimed_by IS NULL AND run_at > zart_now()
  AND EXISTS (SELECT 1 FROM zart_steps s
              WHERE s.execution_id = %(id)s AND s.kind = 'event' AND s.status = 'waiting'
                AND left(s.step_key, length(%(key_prefix)s)) = %(key_prefix)s)
RETURNING id
"""

# -- transactional steps (@zart.transaction; zart.transactional) --------------------------------------

# The first statement of a transactional step's transaction. Its own limits: a worker stopped mid-body
# must not hold its locks past its lease, and the step's timeout (NULL: none) bounds every statement
# of the body. And the fencing check: whether this worker still holds the task (its token unchanged);
# from here on no claim can take the task over (a claim locks `FOR UPDATE SKIP LOCKED`, which skips a
# row locked `FOR KEY SHARE`), while the heartbeat (an UPDATE) and the completer (`FOR NO KEY
# UPDATE`, WRITE_BATCH) go on.
BEGIN_TRANSACTIONAL_STEP = """
WITH held AS (
    SELECT 1 FROM zart_tasks
    WHERE id = %(id)s AND claims = %(claims)s AND claimed_by = %(worker)s
    FOR KEY SHARE
)
SELECT EXISTS (SELECT 1 FROM held)
       AND set_config('idle_in_transaction_session_timeout', %(idle)s, true) IS NOT NULL
       AND set_config('statement_timeout',
                      coalesce(%(statement)s, current_setting('statement_timeout')), true) IS NOT NULL
"""

# The checkpoint and the (succeeded) attempt of a transactional step, in the body's transaction.
RECORD_TRANSACTIONAL_STEP = """
WITH step AS (
    INSERT INTO zart_steps (execution_id, step_key, seq, kind, status, output, attempts, started_at,
                            finished_at)
    VALUES (%(execution_id)s, %(step_key)s, %(seq)s, 'step', 'completed', %(output)s::json, %(attempt)s,
            %(started_at)s, zart_clock())
)
INSERT INTO zart_step_attempts (execution_id, step_key, attempt, worker_id, started_at, finished_at, outcome)
VALUES (%(execution_id)s, %(step_key)s, %(attempt)s, %(worker)s, %(started_at)s, zart_clock(),
        'succeeded')
ON CONFLICT (execution_id, step_key, attempt) DO UPDATE
SET finished_at = excluded.finished_at, outcome = 'succeeded', worker_id = excluded.worker_id
"""

# -- metrics (`GET /metrics`, zart.metrics) -------------------------------------------------------------

# Executions not ended, by workflow and status: a range of zart_execution_runs_status_idx, as large
# as the work in progress, not as the table.
METRICS_LIVE_EXECUTIONS = f"""
SELECT workflow, {_SHOWN_STATUS}, count(*) FROM zart_execution_runs
WHERE status IN ('pending', 'running', 'sleeping', 'waiting')
GROUP BY 1, 2
"""

# Executions ended in the last `seconds`, by workflow and status: a range of
# zart_execution_runs_finished_idx.
METRICS_FINISHED_EXECUTIONS = """
SELECT workflow, status, count(*) FROM zart_execution_runs
WHERE status IN ('completed', 'failed', 'timed_out', 'cancelled')
  AND finished_at > zart_now() - make_interval(secs => %(seconds)s)
GROUP BY 1, 2
"""

# Tasks of begun executions ready for a claim (a sleep's end, a retry, an event, a branch, a lapsed
# lease: a claimed task's run_at is its lease's end), and how long the oldest has waited: a range of
# zart_tasks_ready_idx. (Executions waiting to begin are the queues' `ready`: QUEUE_STATS.)
METRICS_READY_TASKS = """
SELECT count(*), coalesce(extract(epoch FROM zart_now() - min(run_at)), 0)::float8
FROM zart_tasks WHERE admitted AND NOT paused AND run_at <= zart_now()
"""

# Workers whose heartbeat is recent (they renew it every lease/3).
METRICS_WORKERS = """
SELECT count(*) FILTER (WHERE heartbeat_at > zart_now() - interval '1 minute'),
       coalesce(sum(concurrency) FILTER (WHERE heartbeat_at > zart_now() - interval '1 minute'), 0)
FROM zart_workers
"""

# -- the dashboard (zart.http.dashboard) ---------------------------------------------------------------

# Executions ended per minute in the last hour, by status: the overview's chart, a range of
# zart_execution_runs_finished_idx.
DASHBOARD_THROUGHPUT = f"""
SELECT floor(extract(epoch FROM zart_now() - finished_at) / 60)::int, status, count(*)
FROM zart_execution_runs
WHERE status IN {_TERMINAL} AND finished_at > zart_now() - interval '1 hour'
GROUP BY 1, 2
"""

DASHBOARD_WORKERS = """
SELECT id, host, pid, concurrency, started_at, heartbeat_at FROM zart_workers
WHERE heartbeat_at > zart_now() - interval '1 minute' ORDER BY id LIMIT 200
"""

# The events sent to one execution, oldest first (zart_events_execution_idx).
DASHBOARD_EVENTS = """
SELECT id, name, payload::text, key, created_at, consumed_by, consumed_at FROM zart_events
WHERE execution_id = %(id)s ORDER BY id LIMIT %(limit)s
"""

_DASHBOARD_FILTERS = {
    "status": f"status = %(status)s AND {_NOT_SHOWN_PAUSED}",
    "paused": _PAUSED,
    "workflow": "workflow = %(workflow)s",
    # A range of zart_execution_runs_id_prefix_idx (byte order: `~>=~`, `~<~`), then the exact test.
    "prefix": "id ~>=~ %(prefix)s AND id ~<~ %(prefix_end)s AND starts_with(id, %(prefix)s)",
    "since": "created_at >= %(since)s",
    "until": "created_at < %(until)s",
    # The keyset of the newest-first order (created_at DESC, id): the rows after the page's last.
    "after_time": "created_at <= %(after_time)s AND (created_at < %(after_time)s OR id > %(after_id)s)",
    # ... and of the by-id order of a prefix search.
    "after_id": "id ~>~ %(after_id)s",
}


def dashboard_list(filters: frozenset[str], by_id: bool) -> str:
    """The dashboard's page of executions for the filters named (keys of _DASHBOARD_FILTERS): one
    fixed clause per filter, values only as parameters. Newest first on an index that serves the
    filters (zart_execution_runs_created_idx, or the status / workflow index read backwards), or, for
    an id prefix (`by_id`), in id byte order along zart_execution_runs_id_prefix_idx."""
    unknown = filters - _DASHBOARD_FILTERS.keys()
    if unknown:
        raise ValueError(f"unknown filters {sorted(unknown)}")
    where = " AND ".join(_DASHBOARD_FILTERS[name] for name in sorted(filters)) or "TRUE"
    order = "id USING ~<~" if by_id else "created_at DESC, id"
    return (
        f"SELECT id, workflow, {_SHOWN_STATUS}, created_at, finished_at FROM zart_execution_runs "
        f"WHERE {where} ORDER BY {order} LIMIT %(limit)s"
    )


# -- retention (zart prune) ----------------------------------------------------------------------------

# The cutoff is fixed once per prune, by the database's clock, so that executions finishing while
# the prune runs do not keep it going.
PRUNE_CUTOFF = "SELECT zart_now() - make_interval(secs => %(seconds)s::float8)"

COUNT_PRUNABLE = """
SELECT count(*) FROM zart_execution_runs
WHERE status IN ('completed', 'failed', 'timed_out', 'cancelled') AND finished_at < %(cutoff)s
"""

# One batch: up to `limit` finished executions older than the cutoff (oldest first, on
# zart_execution_runs_finished_idx) and every row that belongs to them, in one statement and one
# short transaction. Rows locked by someone else (an event being refused, say) are skipped and
# taken by a later batch or prune. Data-modifying CTEs all run, referenced or not; the counts say
# what each removed. zart_tasks has only two kinds of task, 'workflow' and 'step'.
PRUNE_BATCH = """
WITH doomed AS MATERIALIZED (
    SELECT id FROM zart_execution_runs
    WHERE status IN ('completed', 'failed', 'timed_out', 'cancelled') AND finished_at < %(cutoff)s
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), steps AS (
    DELETE FROM zart_steps WHERE execution_id IN (SELECT id FROM doomed) RETURNING 1
), attempts AS (
    DELETE FROM zart_step_attempts WHERE execution_id IN (SELECT id FROM doomed) RETURNING 1
), events AS (
    DELETE FROM zart_events WHERE execution_id IN (SELECT id FROM doomed) RETURNING 1
), stream_values AS (
    DELETE FROM zart_streams WHERE execution_id IN (SELECT id FROM doomed)
), workflow_tasks AS (  -- split by kind, so that each can use its partial index on execution_id
    DELETE FROM zart_tasks WHERE kind = 'workflow' AND execution_id IN (SELECT id FROM doomed) RETURNING 1
), step_tasks AS (
    DELETE FROM zart_tasks WHERE kind = 'step' AND execution_id IN (SELECT id FROM doomed) RETURNING 1
), runs AS (
    DELETE FROM zart_execution_runs WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps), (SELECT count(*) FROM attempts),
       (SELECT count(*) FROM events),
       (SELECT count(*) FROM workflow_tasks) + (SELECT count(*) FROM step_tasks)
"""

# -- replay-check (zart replay-check) ----------------------------------------------------------------

# The executions whose histories `zart replay-check` replays, read through one server-side cursor
# each: those in flight, oldest first (their histories come from the oldest code), then those that
# finished within `since` seconds, newest first (on zart_execution_runs_finished_idx). One statement
# per filter, as for the lists above. `limit` NULL: all of them. The recorded error's type tells a
# replay that fails as the execution did from code that now fails where it did not.
_CHECK_IN_FLIGHT = """
SELECT id, workflow, status, input::text, error->>'type'
FROM zart_execution_runs
WHERE status IN ('pending', 'running', 'sleeping', 'waiting'){workflow}
ORDER BY created_at, id
LIMIT %(limit)s
"""
CHECK_IN_FLIGHT = _CHECK_IN_FLIGHT.format(workflow="")
CHECK_IN_FLIGHT_OF_WORKFLOW = _CHECK_IN_FLIGHT.format(workflow=" AND workflow = %(workflow)s")

_CHECK_FINISHED = """
SELECT id, workflow, status, input::text, error->>'type'
FROM zart_execution_runs
WHERE status IN ('completed', 'failed', 'timed_out', 'cancelled')
  AND finished_at >= zart_now() - make_interval(secs => %(since)s){workflow}
ORDER BY finished_at DESC, id
LIMIT %(limit)s
"""
CHECK_FINISHED = _CHECK_FINISHED.format(workflow="")
CHECK_FINISHED_OF_WORKFLOW = _CHECK_FINISHED.format(workflow=" AND workflow = %(workflow)s")

# The whole histories of a batch of executions, in one statement (on zart_steps' primary key). In
# no particular order: a history is keyed by position (zart.history).
CHECK_HISTORIES = """
SELECT execution_id, step_key, seq, kind, status, output::text, error::text
FROM zart_steps WHERE execution_id = ANY(%(ids)s::text[])
"""

# -- schedules (zart.scheduler) ----------------------------------------------------------------------

# The engine's clock (migration 0016), read by schedules, the dashboard and the test kit.
DATABASE_NOW = "SELECT zart_now()"

# A worker registers the schedules its workflows declare (`schedule=`), `zart.schedule` one at a time.
# A changed rule (cron or time zone) takes the next firing computed for it; an unchanged one keeps its
# own, so that a restart neither repeats nor skips a firing. Pausing is the operator's: kept.
REGISTER_SCHEDULES = """
INSERT INTO zart_schedules (name, cron, timezone, catch_up, workflow, input, next_fire_at)
SELECT * FROM unnest(%(names)s::text[], %(crons)s::text[], %(timezones)s::text[], %(catch_ups)s::text[],
                     %(workflows)s::text[], %(inputs)s::json[], %(next_fire_ats)s::timestamptz[])
ON CONFLICT (name) DO UPDATE
SET next_fire_at = CASE WHEN (zart_schedules.cron, zart_schedules.timezone)
                             IS DISTINCT FROM (excluded.cron, excluded.timezone)
                        THEN excluded.next_fire_at ELSE zart_schedules.next_fire_at END,
    cron = excluded.cron, timezone = excluded.timezone, catch_up = excluded.catch_up,
    workflow = excluded.workflow, input = excluded.input,
    updated_at = CASE WHEN (zart_schedules.cron, zart_schedules.timezone, zart_schedules.catch_up,
                            zart_schedules.workflow, zart_schedules.input::text)
                           IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.catch_up,
                                             excluded.workflow, excluded.input::text)
                      THEN zart_now() ELSE zart_schedules.updated_at END
"""

DELETE_SCHEDULE = "DELETE FROM zart_schedules WHERE name = %(name)s RETURNING name"

# The due schedules no other worker is firing right now; the lock is held until the transaction that
# starts their firings and advances next_fire_at commits.
CLAIM_DUE_SCHEDULES = """
SELECT name, cron, timezone, catch_up, workflow, input::text, next_fire_at, zart_now()
FROM zart_schedules
WHERE NOT paused AND next_fire_at <= zart_now()
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

ADVANCE_SCHEDULE = """
UPDATE zart_schedules
SET next_fire_at = %(next_fire_at)s,
    last_execution = coalesce(%(last_execution)s, last_execution),
    last_fired_at = coalesce(%(last_fired_at)s, last_fired_at)
WHERE name = %(name)s
"""

# How long the scheduler may sleep: until the earliest firing of an unpaused schedule (NULL: none);
# and the database's clock.
SECONDS_TO_NEXT_FIRING = """
SELECT extract(epoch FROM min(next_fire_at) - zart_clock())::float8, zart_clock()
FROM zart_schedules WHERE NOT paused
"""

LIST_SCHEDULES = """
SELECT name, cron, timezone, catch_up, workflow, next_fire_at, last_execution, last_fired_at, paused
FROM zart_schedules ORDER BY name
"""

# Resuming a schedule moves its next firing to the first one after now when the time it stood at has
# passed (the firings of the pause are not made up), computed by the caller.
SET_SCHEDULE_PAUSED = """
UPDATE zart_schedules
SET paused = %(paused)s, updated_at = zart_now(),
    next_fire_at = CASE WHEN NOT %(paused)s AND paused AND next_fire_at < zart_now()
                        THEN %(next_fire_at)s ELSE next_fire_at END
WHERE name = %(name)s
RETURNING name
"""

SELECT_SCHEDULE_RULE = "SELECT cron, timezone, catch_up FROM zart_schedules WHERE name = %(name)s"

# -- the test kit's clock (zart.testing) -----------------------------------------------------------------


def engine_clock(offset_seconds: float) -> list[str]:
    """The DDL that sets the engine's clock `offset_seconds` ahead of the database's, in one test
    database (zart.testing). The offset is a number made by Python, not text from outside; the
    functions stay inlinable, and plans that inlined the old ones are invalidated by PostgreSQL."""
    offset = float(offset_seconds)
    if offset != offset or offset in (float("inf"), float("-inf")):
        raise ValueError(f"the clock offset must be a finite number of seconds, not {offset_seconds!r}")
    shift = f"make_interval(secs => {offset!r})"
    return [
        "CREATE OR REPLACE FUNCTION zart_now() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE"
        f" AS 'SELECT now() + {shift}'",
        "CREATE OR REPLACE FUNCTION zart_statement_time() RETURNS timestamptz LANGUAGE sql STABLE"
        f" PARALLEL SAFE AS 'SELECT statement_timestamp() + {shift}'",
        "CREATE OR REPLACE FUNCTION zart_clock() RETURNS timestamptz LANGUAGE sql VOLATILE PARALLEL SAFE"
        f" AS 'SELECT clock_timestamp() + {shift}'",
    ]


# Whether anything can happen without the clock moving: tasks held by a worker (running), tasks due
# (a claimable one, in a queue without a concurrency limit when not yet admitted), schedules due.
TEST_ACTIVITY = """
SELECT (SELECT count(*) FROM zart_tasks WHERE claimed_by IS NOT NULL AND run_at > zart_now()),
       (SELECT count(*) FROM zart_tasks t
        WHERE NOT t.paused AND t.run_at <= zart_now()
          AND (t.admitted OR NOT EXISTS (SELECT 1 FROM zart_queues q
                                         WHERE q.name = t.queue AND q.concurrency IS NOT NULL))),
       (SELECT count(*) FROM zart_schedules WHERE NOT paused AND next_fire_at <= zart_now())
"""

# Seconds from the engine's now to the next moment something falls due by the clock alone: a timer
# of a task no worker holds (a sleep's end, a retry's back-off, an event wait's or a delayed start's
# moment), or a schedule's firing; NULL when nothing waits for the clock.
TEST_NEXT_DUE = """
SELECT extract(epoch FROM least(
    (SELECT min(run_at) FROM zart_tasks
     WHERE claimed_by IS NULL AND NOT paused AND run_at > zart_now() AND run_at < 'infinity'),
    (SELECT min(next_fire_at) FROM zart_schedules WHERE NOT paused AND next_fire_at > zart_now())
) - zart_now())::float8
"""
