-- Live workers: each worker process registers here at start, beats every lease/3 and removes its
-- row when it stops. A row whose heartbeat is older than the lease belongs to a worker that died.
CREATE TABLE zart_workers (
    id             text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    supervisor_pid integer,
    concurrency    integer NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    heartbeat_at   timestamptz NOT NULL DEFAULT now()
);
