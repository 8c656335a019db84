"""The status reads of `result()` / `aresult()`, grouped: one statement for every waiter of a process.

A waiter reads its execution's status when it begins and again each time the execution's end is
announced (zart.waiting). A process awaiting thousands of results (a service that started them, a
benchmark) would make one pooled round trip per read; here the reads waiting at one moment become
one `id = ANY(...)` query on the process's reader thread (a `zart.batching.Batcher`), and an async
waiter holds no thread meanwhile.
"""

from __future__ import annotations

from . import sql
from .batching import Batcher, PerProcess
from .pools import shared_pool

Row = tuple[str, str | None, str | None]  # status, result JSON, error JSON


class StatusReader(Batcher[str, Row | None]):
    """The reader of one process and database: `call(id)` / `acall(id)` -> (status, result, error),
    or None when no such execution exists."""

    thread_name = "zart-status-reader"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def handle(self, ids: list[str]) -> list[Row | None]:
        with shared_pool(self.url).connection() as conn:  # one statement: no BEGIN/COMMIT around it
            found = {
                row[0]: (row[1], row[2], row[3])
                for row in conn.execute(sql.SELECT_EXECUTION_STATUSES, {"ids": list(dict.fromkeys(ids))})
            }
        return [found.get(execution_id) for execution_id in ids]


_readers: PerProcess[StatusReader] = PerProcess(StatusReader)


def reader_for(url: str) -> StatusReader:
    """This process's reader for `url`."""
    return _readers.get(url)
