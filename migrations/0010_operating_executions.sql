-- Operating executions after the fact: pause, resume, fork (docs/architecture.md, "Operating
-- executions").

-- Pause. A paused execution keeps its own status (sleeping, waiting, running...) and its tasks keep
-- their run_at; the flag hides the tasks from every claim (the ready index leaves them out) and makes
-- the status read 'paused'. So the writers of run_at (a release, a fan-in, an event's delivery, a dead
-- worker's hand-back) need not know about pauses: unpausing clears the flags, and what came due
-- meanwhile is ready at once.
ALTER TABLE zart_execution_runs ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE zart_tasks ADD COLUMN paused boolean NOT NULL DEFAULT false;
DROP INDEX zart_tasks_ready_idx;
CREATE INDEX zart_tasks_ready_idx ON zart_tasks (run_at) WHERE admitted AND NOT paused;
CREATE INDEX zart_execution_runs_paused_idx ON zart_execution_runs (created_at) WHERE paused;

-- An attempt whose start was committed with the checkpoint that found the execution paused: its
-- step never ran. Counted neither as a failure nor as a crash.
ALTER TABLE zart_step_attempts DROP CONSTRAINT zart_step_attempts_outcome_check;
ALTER TABLE zart_step_attempts ADD CONSTRAINT zart_step_attempts_outcome_check
    CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'abandoned', 'paused'));

-- Resume. Attempts made before a resume stay on record but no longer count against their step's
-- retry budget or the poison-pill limit.
ALTER TABLE zart_step_attempts ADD COLUMN counts boolean NOT NULL DEFAULT true;
ALTER TABLE zart_execution_runs ADD COLUMN resumes integer NOT NULL DEFAULT 0;

-- Fork. The new execution names the one it was forked from and the step it runs on from.
ALTER TABLE zart_execution_runs ADD COLUMN forked_from text, ADD COLUMN forked_at text;
CREATE INDEX zart_execution_runs_forked_from_idx ON zart_execution_runs (forked_from)
    WHERE forked_from IS NOT NULL;
