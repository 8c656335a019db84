"""Recorded histories in bulk, for `zart replay-check`: the executions to check, batch by batch, each
with its whole history.

The executions in flight come first (those a deploy must replay), then those that finished within
`since` (the paths the code took lately). A check may cover a great many executions, so nothing is
read whole: a server-side cursor per list streams the executions, and each batch's histories are one
statement. Everything is read in one read-only REPEATABLE READ transaction: the lists and the
histories are one snapshot, as `pg_dump` reads, at the price of holding that snapshot while the
check runs (seconds for tens of thousands of executions).

Nothing is migrated either: a check of production before a deploy must not apply the new code's
migrations. It reads only columns every schema version has.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import psycopg

from . import sql
from .db import connect, redact
from .errors import ConfigurationError
from .history import Checkpoint

DEFAULT_BATCH_SIZE = 1000
IN_FLIGHT_STATUSES = frozenset({"pending", "running", "sleeping", "waiting"})


@attrs.frozen
class RecordedExecution:
    """One execution as recorded: what a replay needs, and what tells its verdict."""

    id: str
    workflow: str
    status: str
    input_json: str | None
    error_type: str | None  # the type of the error it ended with, if it did
    history: list[Checkpoint]

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES


def recorded_executions(
    url: str,
    *,
    workflow: str | None = None,
    since: float,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[list[RecordedExecution]]:
    """Batches of at most `batch_size` executions with their histories: those in flight, then those
    that finished less than `since` seconds ago; at most `limit` in all (None: every one)."""
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    params = {"workflow": workflow, "since": since, "limit": limit}
    in_flight, finished = (
        (sql.CHECK_IN_FLIGHT, sql.CHECK_FINISHED)
        if workflow is None
        else (sql.CHECK_IN_FLIGHT_OF_WORKFLOW, sql.CHECK_FINISHED_OF_WORKFLOW)
    )
    with connect(url, autocommit=False, writes=False) as conn:  # a standby will do
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            left = limit
            for statement in (in_flight, finished):
                params["limit"] = left
                try:
                    for batch in _batches(conn, statement, params, batch_size):
                        yield batch
                        if left is not None:
                            left -= len(batch)
                except psycopg.errors.UndefinedTable:
                    raise ConfigurationError(
                        f"the database at {redact(url)} has no Zart tables: nothing was recorded there "
                        "(`zart migrate` creates them)"
                    ) from None
                if left == 0:
                    return


def _batches(
    conn: psycopg.Connection, statement: str, params: dict[str, object], batch_size: int
) -> Iterator[list[RecordedExecution]]:
    with conn.cursor(name="zart_replay_check") as cursor:
        cursor.itersize = batch_size
        cursor.execute(statement, params)
        while rows := cursor.fetchmany(batch_size):
            histories: dict[str, list[Checkpoint]] = {row[0]: [] for row in rows}
            for execution_id, key, seq, kind, status, output, error in conn.execute(
                sql.CHECK_HISTORIES, {"ids": list(histories)}
            ):
                histories[execution_id].append(Checkpoint(key, seq, status, output, error, kind))
            yield [
                RecordedExecution(
                    execution_id, workflow, status, input_text, error_type, histories[execution_id]
                )
                for execution_id, workflow, status, input_text, error_type in rows
            ]
