"""Durable waits inside a workflow: `zart.sleep` and `zart.wait_for_event`.

(Not `zart.waiting`, which is how a caller waits for an execution's result.)

A wait holds no worker: the first time the body reaches it, the wait's deadline is recorded (a
`waiting` history entry) and the execution's task is handed back to run again at that deadline
(`Journal.suspend_as`); an event wait is also woken by its event. The replay then finds the entry,
and either the wait is over (it is recorded `completed`, or `failed` for an event wait that timed
out) or it suspends again for what is left of it: the deadline survives restarts, so a restart
neither repeats nor restarts a wait.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from . import serde
from .current import require_execution
from .durations import parse_duration
from .errors import EventTimeout
from .journal import utcnow
from .names import check_name

# Sleep and event names become checkpoint keys, like step names (registry: at most 200 characters).
MAX_WAIT_NAME_LENGTH = 200


async def sleep(name: str, duration: Any) -> None:
    """Suspend the execution durably for `duration` (`"5m"`, `timedelta`...): no worker is held.

    `name` identifies the sleep in the history (`sleep:name#k`); the deadline is fixed the first
    time the workflow reaches it and survives restarts.
    """
    execution = require_execution("zart.sleep()")
    seconds = parse_duration(duration, f"duration of sleep {name!r}")
    history, journal = execution.history, execution.journal
    key = history.next_key("sleep", check_name(name, "the name of a sleep", MAX_WAIT_NAME_LENGTH))
    position, recorded = history.next_entry(key)
    if recorded is None:  # first time here: the deadline becomes durable, then we suspend
        journal.pending.steps.append(
            (key, position, "sleep", "waiting", None, None, 0, utcnow(), None, seconds)
        )
        await journal.suspend_as("sleeping", seconds)
    if recorded.status == "completed":
        return
    await execution.until_due()
    remaining = history.remaining(recorded)
    if remaining > 0:  # woken before the deadline (a stray claim): back to sleep
        await journal.suspend_as("sleeping", remaining)
    journal.pending.steps.append((key, position, "sleep", "completed", None, None, 0, None, utcnow(), None))
    journal.set_status("running")


async def wait_for_event(name: str, timeout: Any = None) -> Any:
    """Wait durably for the event `name` sent to this execution; its payload, or EventTimeout."""
    execution = require_execution("zart.wait_for_event()")
    seconds = None if timeout is None else parse_duration(timeout, f"timeout of event wait {name!r}")
    history, journal = execution.history, execution.journal
    key = history.next_key("event", check_name(name, "the name of an event", MAX_WAIT_NAME_LENGTH))
    position, recorded = history.next_entry(key)
    if recorded is not None and recorded.status == "completed":
        return serde.loads(recorded.output)
    if recorded is not None and recorded.status == "failed":
        error = serde.loads(recorded.error) or {}
        raise EventTimeout(error.get("message", f"no event {name!r} arrived in time"))
    await execution.until_due()
    events = execution.events
    event = next((e for e in events if e.name == name), None)
    if event is not None:  # delivered before (or while) we waited: take it, oldest first
        events.remove(event)
        now = utcnow()
        journal.pending.consumed_events.append((event.id, key))
        journal.set_status("running")
        journal.pending.steps.append(
            (key, position, "event", "completed", event.payload, None, 0, now, now, None)
        )
        return serde.loads(event.payload)
    if recorded is None:
        journal.pending.steps.append(
            (key, position, "event", "waiting", None, None, 0, utcnow(), None, seconds)
        )
        remaining = math.inf if seconds is None else seconds
    else:
        remaining = history.remaining(recorded)
    if remaining <= 0:
        message = f"no event {name!r} arrived before the wait's timeout"
        record = {"type": "EventTimeout", "message": message, "traceback": ""}
        journal.pending.steps.append(
            (
                key,
                position,
                "event",
                "failed",
                None,
                orjson.dumps(record).decode(),
                0,
                None,
                utcnow(),
                None,
            )
        )
        raise EventTimeout(message)
    await journal.suspend_as("waiting", remaining, event=name)
