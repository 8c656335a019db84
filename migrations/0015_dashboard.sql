-- The dashboard's search by id prefix (zart serve, page /executions?id=PREFIX).
--
-- The primary key's btree follows the database's collation, in which the ids that start with a
-- prefix need not be neighbours (only under "C" are they), so it cannot serve a prefix search. This
-- index orders ids byte by byte (text_pattern_ops): the ids of a prefix are one range of it, read in
-- that order, so a page of them costs the same on a table of a million executions.
CREATE INDEX zart_execution_runs_id_prefix_idx ON zart_execution_runs (id text_pattern_ops);
