-- Parallel steps and durable loops fan out through step tasks (kind 'step'), which any worker
-- can claim. A branch task carries its step's name and arguments (payload), the position of its
-- checkpoint in the history (seq) and the fan-out it belongs to (grp: the position of the fan-out's
-- first branch). zart.map's concurrency limit parks the branches beyond the window at
-- run_at = 'infinity'; each finishing branch readies the next parked one of its group.
ALTER TABLE zart_tasks ADD COLUMN payload json;
ALTER TABLE zart_tasks ADD COLUMN seq integer;
ALTER TABLE zart_tasks ADD COLUMN grp integer;
CREATE UNIQUE INDEX zart_tasks_one_step_task_idx ON zart_tasks (execution_id, step_key)
    WHERE kind = 'step';
CREATE INDEX zart_tasks_parked_branches_idx ON zart_tasks (execution_id, grp, id)
    WHERE kind = 'step' AND run_at = 'infinity';
