-- Streams (zart.emit): values a running execution appends to named streams, read live by
-- `handle.stream(name)` and GET /v1/executions/{id}/streams/{name} (docs/streams.md).
-- Each value is written in the same transaction as the history entry (kind 'emit') that records
-- its emit, and its position is fixed by the workflow's code (the k-th emit to that stream): the
-- primary key makes a second append of the same value impossible, even by a replay. No foreign key,
-- like the other hot tables (docs/architecture.md, "Tables"): `zart prune` deletes the rows.
CREATE TABLE zart_streams (
    execution_id  text NOT NULL,
    stream        text NOT NULL,
    seq           integer NOT NULL CHECK (seq >= 1),
    value         json,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (execution_id, stream, seq)
);
