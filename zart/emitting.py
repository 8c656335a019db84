"""`zart.emit`: a workflow appends a value to one of its execution's streams.

An emit is a durable call like a sleep: it takes the next position in the history, with the key
`emit:NAME#k` (the k-th emit to stream NAME), and its value is the k-th value of that stream. The
value (zart_streams) and the history entry go in the same fragment, so in the same commit, and the
emit returns once that commit is done: readers (`zart.streams`) see the value within a
notification's delay. A replay that reaches an emit already recorded only moves past it; and since
the value's key is fixed by the workflow's code, even a retried commit cannot append it twice.
"""

from __future__ import annotations

from typing import Any

from . import serde
from .current import require_execution
from .journal import utcnow
from .names import check_name

# Stream names become checkpoint keys (`emit:NAME#k`), like event and sleep names.
MAX_STREAM_NAME_LENGTH = 200


async def emit(name: str, value: Any) -> None:
    """Append `value` to this execution's stream `name`, once: a replay does not append it again.

    The value is durable, and readers of the stream (`handle.stream(name)`, the HTTP API's
    Server-Sent Events) are woken, when this returns.
    """
    execution = require_execution("zart.emit()")
    check_name(name, "the name of a stream", MAX_STREAM_NAME_LENGTH)
    data = serde.dumps(value, f"a value of stream {name!r}")
    history, journal = execution.history, execution.journal
    count = history.count_call("emit", name)
    key = f"emit:{name}#{count}"
    position, recorded = history.next_entry(key)
    if recorded is not None:  # emitted before this replay: the value is in the stream already
        return
    now = utcnow()
    journal.pending.steps.append((key, position, "emit", "completed", None, None, 0, now, now, None))
    journal.pending.stream_values.append((name, count, data.decode()))
    await journal.flush()
