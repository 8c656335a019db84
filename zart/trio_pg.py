"""One PostgreSQL connection driven from the trio loop itself, for the completer's hot statement.

A worker's database calls run in threads (`trio.to_thread`): a hand-off to a thread and a wake-up
of the trio loop on the way back, about 0.15-0.25 ms per call on a 2-core machine, paid by every
checkpoint of an idle workflow (four on the path of a 3-step workflow from its start to its result).
The completer's plain batch is one prepared statement (sql.WRITE_BATCH) that needs nothing of
psycopg's beyond what libpq gives, so, like the listener (zart.listener), this sends it with libpq's
non-blocking calls and waits on the socket with `trio.lowlevel.wait_readable`. psycopg still makes
the connection (with Zart's session settings) and turns an error result into its exception class.

Parameters go as text: strings as they are, lists of whole numbers as array literals; values come
back as text (bytes). The statements that run here need nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

import psycopg
import trio
from psycopg import errors, pq

from .db import connect

Param = str | Sequence[int] | None


def numbered(statement: str) -> tuple[str, list[str]]:
    """`statement` with libpq's $n placeholders for psycopg's %(name)s, and the names in $n order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, statement), names


def _encode(value: Param) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return ("{" + ",".join(str(int(item)) for item in value) + "}").encode()


def parse_int_array(text: bytes | None) -> list[int]:
    """A one-dimensional array of whole numbers, as PostgreSQL writes it: b'{1,2,3}'."""
    if not text or text == b"{}":
        return []
    return [int(item) for item in text[1:-1].split(b",")]


class TrioConnection:
    """A connection opened on first use and again after it was lost; one statement at a time.

    A lost connection raises `psycopg.OperationalError` (an outage, which the caller waits out) and
    is closed; the next call connects anew. A call cancelled while its statement is in flight
    closes the connection too: its state is unknown (and with it the statement's outcome).
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection | None = None
        self._prepared: set[str] = set()
        self._statements: dict[str, tuple[bytes, bytes, list[str]]] = {}

    async def query(self, statement: str, params: dict[str, Param]) -> list[list[bytes | None]]:
        """Run `statement` (prepared on its first use on this connection); its rows, as text."""
        name, text, names = self._statement(statement)
        conn = self._conn
        if conn is None:
            conn = await trio.to_thread.run_sync(partial(connect, self._url))  # Zart's session settings
            conn.pgconn.nonblocking = 1
            self._conn, self._prepared = conn, set()
        pgconn = conn.pgconn
        finished = False  # else the connection's state is unknown: closed
        try:
            result = None
            if statement not in self._prepared:
                pgconn.send_prepare(name, text)
                result = await self._results(pgconn)
                if result.status != pq.ExecStatus.FATAL_ERROR:
                    self._prepared.add(statement)
                    result = None
            if result is None:
                pgconn.send_query_prepared(name, [_encode(params[n]) for n in names])
                result = await self._results(pgconn)
            finished = True
        except (psycopg.Error, OSError) as exc:
            raise psycopg.OperationalError(f"the connection to PostgreSQL was lost: {exc}") from exc
        finally:
            if not finished:
                self.close()
        _raise_if_failed(result)  # the server refused the statement: the connection is fine
        return [
            [result.get_value(row, col) for col in range(result.nfields)] for row in range(result.ntuples)
        ]

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _statement(self, statement: str) -> tuple[bytes, bytes, list[str]]:
        known = self._statements.get(statement)
        if known is None:
            text, names = numbered(statement)
            known = self._statements[statement] = (
                f"zart_trio_{len(self._statements)}".encode(),
                text.encode(),
                names,
            )
        return known

    async def _results(self, pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
        """Send what is queued, then wait for every result of the statement: its error if it
        failed, else its last. Raises if the connection fails meanwhile."""
        while pgconn.flush():
            await trio.lowlevel.wait_writable(pgconn.socket)
        kept: pq.abc.PGresult | None = None
        while True:
            while pgconn.is_busy():
                await trio.lowlevel.wait_readable(pgconn.socket)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            if kept is None or kept.status != pq.ExecStatus.FATAL_ERROR:
                kept = result
        if pgconn.status != pq.ConnStatus.OK or kept is None:
            raise psycopg.OperationalError(pgconn.get_error_message().decode(errors="replace") or "no result")
        return kept


def _raise_if_failed(result: pq.abc.PGresult) -> None:
    if result.status == pq.ExecStatus.FATAL_ERROR:
        raise errors.error_from_result(result, encoding="utf-8")
