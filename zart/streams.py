"""Reading an execution's streams (`zart.emit`): every value from the start, then the live ones.

A reader registers with the process's shared listener (`zart.waiting`) *before* it reads, then reads
the values after the last one it has, together with the execution's status (one statement, one
snapshot), and waits for a notification: the commit that appends values to a stream of the
execution notifies `zart_stream`, its end `zart_done`. So a value reaches an idle reader one
notification after its commit, without polling; the reader still reads once a second without one
(a lost connection costs a second, never a hang). Once the status read is terminal, the values read
with it are the last: the stream ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import attrs

from . import serde, sql, waiting
from .errors import ExecutionNotFound
from .names import check_name
from .pools import transaction
from .threads import in_thread

# Values read per statement: a reader far behind catches up in pages.
PAGE = 500
MAX_STREAM_NAME_LENGTH = 200  # zart.emitting's


@attrs.frozen
class StreamValue:
    """One value of a stream: its position (1, 2, ...), the value as stored JSON text, when written."""

    seq: int
    data: str
    created_at: datetime

    @property
    def value(self) -> Any:
        return serde.loads(self.data)


def check_stream_name(name: Any) -> str:
    return check_name(name, "the name of a stream", MAX_STREAM_NAME_LENGTH)


def read_values(url: str, execution_id: str, stream: str, after: int) -> tuple[bool, list[StreamValue]]:
    """(whether the execution has ended, the values after `after`, at most PAGE of them)."""
    with transaction(url) as conn:
        rows = conn.execute(
            sql.SELECT_STREAM_VALUES, {"id": execution_id, "stream": stream, "after": after, "limit": PAGE}
        ).fetchall()
    if not rows:
        raise ExecutionNotFound(f"no execution with id {execution_id!r}")
    values = [StreamValue(seq, data, created) for _, seq, data, created in rows if seq is not None]
    return rows[0][0] in sql.TERMINAL_STATUSES, values


def tails(url: str, execution_id: str, limit: int = 3) -> list[tuple[str, int, list[StreamValue]]]:
    """Each stream of the execution: its name, its number of values and its last `limit` values."""
    with transaction(url) as conn:
        rows = conn.execute(sql.SELECT_STREAM_TAILS, {"id": execution_id, "limit": limit}).fetchall()
    found: dict[str, tuple[int, list[StreamValue]]] = {}
    for stream, seq, data, total in rows:
        found.setdefault(stream, (total, []))[1].append(StreamValue(seq, data, datetime.min))
    return [(stream, total, values) for stream, (total, values) in found.items()]


def follow(url: str, execution_id: str, stream: str, after: int = 0) -> Iterator[StreamValue]:
    """The stream's values after `after`, until the execution has ended and its last value is out."""
    check_stream_name(stream)
    with waiting.watch(url, execution_id, streams=True) as woken:
        while True:
            woken.clear()
            ended, values = read_values(url, execution_id, stream, after)
            for value in values:
                after = value.seq
                yield value
            if len(values) == PAGE:
                continue
            if ended:
                return
            woken.wait(waiting.FALLBACK_SECONDS)


async def afollow(url: str, execution_id: str, stream: str, after: int = 0) -> AsyncIterator[StreamValue]:
    """`follow` for async code (trio or asyncio): the waits hold no thread, only the reads take one."""
    check_stream_name(stream)
    async with waiting.awatch(url, execution_id, streams=True) as woken:
        while True:
            woken.clear()
            ended, values = await in_thread(read_values, url, execution_id, stream, after)
            for value in values:
                after = value.seq
                yield value
            if len(values) == PAGE:
                continue
            if ended:
                return
            await woken.wait(waiting.FALLBACK_SECONDS)


__all__ = ["StreamValue", "afollow", "follow", "read_values", "tails"]
