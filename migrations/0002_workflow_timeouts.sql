-- Workers register each workflow's timeout with its name, so that a process which starts a
-- workflow by name without importing its module (the CLI, the HTTP API) can still set the
-- execution's deadline at start.
ALTER TABLE zart_workflows ADD COLUMN timeout_seconds double precision;
