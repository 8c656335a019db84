-- Several machines on one database: each worker row names its group (the `zart supervise --name` it
-- runs under, or NULL for a worker of its own) and whether it LISTENs. The listening groups share the
-- notifications between them (zart.wake_routing): each notification wakes the workers of one group,
-- not every machine's.
ALTER TABLE zart_workers ADD COLUMN worker_group text, ADD COLUMN listens boolean NOT NULL DEFAULT true;
