"""zart.trio_pg: the completer's connection driven from the trio loop, against a real PostgreSQL.

What the completer relies on: rows come back as text; a statement the server refuses raises
psycopg's exception for its SQLSTATE (not transient: the completer looks for the fragment it
refuses) and leaves the connection usable; a connection that is lost, or a call cancelled in
flight, raises an outage (transient: the completer retries) or the cancellation, and the next call
connects anew.
"""

from __future__ import annotations

import psycopg
import pytest
import trio

from zart.db import is_transient
from zart.trio_pg import TrioConnection, numbered, parse_int_array

ARRAY = "SELECT array(SELECT unnest(%(ids)s::bigint[]) * 2), %(name)s::text || '!', %(none)s::text"
BACKEND = "SELECT pg_backend_pid()"


def test_placeholders_are_numbered_in_order_of_first_use():
    assert numbered("SELECT %(b)s, %(a)s, %(b)s") == ("SELECT $1, $2, $1", ["b", "a"])
    assert parse_int_array(b"{}") == [] and parse_int_array(b"{3,-4}") == [3, -4]


def test_rows_come_back_as_text_and_the_statement_is_prepared_once(database_url):
    async def main() -> list[list[list[bytes | None]]]:
        connection = TrioConnection(database_url)
        try:
            return [
                await connection.query(ARRAY, {"ids": [1, 2, 3], "name": "zart", "none": None}),
                await connection.query(ARRAY, {"ids": [], "name": "é", "none": None}),
            ]
        finally:
            connection.close()

    first, second = trio.run(main)
    assert first == [[b"{2,4,6}", b"zart!", None]]
    assert second == [[b"{}", "é!".encode(), None]]


def test_a_refused_statement_raises_its_error_and_the_connection_stays(database_url):
    async def main() -> tuple[BaseException, int, int]:
        connection = TrioConnection(database_url)
        try:
            (before,) = (await connection.query(BACKEND, {}))[0]
            with pytest.raises(psycopg.Error) as refused:
                await connection.query("SELECT %(n)s::int", {"n": "not a number"})
            (after,) = (await connection.query(BACKEND, {}))[0]
            return refused.value, int(before), int(after)
        finally:
            connection.close()

    error, before, after = trio.run(main)
    assert isinstance(error, psycopg.errors.InvalidTextRepresentation)
    assert not is_transient(error)
    assert before == after  # the same connection


def test_a_lost_connection_is_an_outage_and_the_next_call_reconnects(database_url):
    async def main() -> tuple[BaseException, int, int]:
        connection = TrioConnection(database_url)
        try:
            (before,) = (await connection.query(BACKEND, {}))[0]
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (int(before),))
            with pytest.raises(psycopg.OperationalError) as lost:
                await connection.query(BACKEND, {})
            (after,) = (await connection.query(BACKEND, {}))[0]
            return lost.value, int(before), int(after)
        finally:
            connection.close()

    error, before, after = trio.run(main)
    assert is_transient(error)
    assert before != after


def test_a_call_cancelled_in_flight_closes_the_connection(database_url):
    async def main() -> tuple[int, int, bool]:
        connection = TrioConnection(database_url)
        try:
            (before,) = (await connection.query(BACKEND, {}))[0]
            with trio.move_on_after(0.2) as scope:
                await connection.query("SELECT pg_sleep(%(s)s::float8)", {"s": "3"})
            (after,) = (await connection.query(BACKEND, {}))[0]
            return int(before), int(after), scope.cancelled_caught
        finally:
            connection.close()

    before, after, cancelled = trio.run(main)
    assert cancelled
    assert before != after  # its state was unknown: a new connection
