-- Several machines on one database: each worker row names its group (the `zart supervise --name` it
-- runs under, or NULL for a worker of its own) and whether it LISTENs. The listening groups share the
-- notifications between them (zart.wake_routing): each notification wakes the workers of one group,
-- not every machine's. A worker counts as live while its heartbeat is within its own lease (`lease`,
-- seconds), so that machines run with different leases agree on who is live.
ALTER TABLE zart_workers
    ADD COLUMN worker_group text,
    ADD COLUMN listens boolean NOT NULL DEFAULT true,
    ADD COLUMN lease double precision NOT NULL DEFAULT 30;
