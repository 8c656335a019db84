-- The engine's clock: every decision about time in Zart's statements (a task's run_at and lease, a
-- sleep's end, an event wait's and a workflow's deadline, a retry's back-off, a schedule's firing, a
-- queue's rate window) reads these functions rather than now(), statement_timestamp() and
-- clock_timestamp() themselves.
--
-- In production they are those very functions: SQL functions this simple are inlined by the planner,
-- so a statement's plan and cost are what they were. zart.testing redefines them in a test's own
-- database, shifted by the time the test skipped (`advance`), so that a week-long sleep falls due at
-- once; the columns' defaults (created_at, ...) stay on the real clock, which decides nothing.
CREATE FUNCTION zart_now() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS 'SELECT now()';
CREATE FUNCTION zart_statement_time() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS 'SELECT statement_timestamp()';
CREATE FUNCTION zart_clock() RETURNS timestamptz
    LANGUAGE sql VOLATILE PARALLEL SAFE AS 'SELECT clock_timestamp()';
