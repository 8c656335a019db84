-- Child workflows (zart.child, zart.map over a workflow; docs/composition.md).
--
-- A child is an execution of its own, started in the same transaction that records it in its
-- parent's history (an entry of kind 'child', 'waiting' until the child ends). The child's row
-- names its parent, the key of that entry, and its place among its fan-out's siblings: the child's
-- final transaction records its outcome in that entry, readies the next parked sibling of a
-- zart.map window, and wakes the parent once no child of it is still waiting (zart/sql.py,
-- FINISH_CHILDREN). Nullable columns without defaults: adding them rewrites nothing.
ALTER TABLE zart_execution_runs
    ADD COLUMN parent_id    text,
    ADD COLUMN parent_key   text,
    ADD COLUMN parent_group integer,
    ADD COLUMN parent_seq   integer;

-- A parent's children, by fan-out and position: listing them (`zart show`), readying the next of a
-- window, cancelling them with their parent.
CREATE INDEX zart_execution_runs_children_idx
    ON zart_execution_runs (parent_id, parent_group, parent_seq) WHERE parent_id IS NOT NULL;

-- Whether a parent still waits for a child: a probe of this small index at each child's end.
CREATE INDEX zart_steps_waiting_children_idx
    ON zart_steps (execution_id) WHERE kind = 'child' AND status = 'waiting';
