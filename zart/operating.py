"""Operating executions after the fact: pause, unpause, resume, fork.

Each is one transaction that locks the execution's workflow task first, then its row (the lock
order of `cancel` and `send_event`), so it is race-free against a worker running the execution at
that moment: the worker's checkpoint batch (sql.WRITE_BATCH) locks the same task row before it
writes, and so either commits before the operation (which then sees what it wrote) or after it
(and then sees the operation's change: a pause, a task that is no longer its own). How each stays
safe is in docs/architecture.md, "Operating executions".
"""

from __future__ import annotations

import uuid

import psycopg

from . import sql
from .client import TERMINAL, ExecutionHandle
from .db import resolve_url
from .errors import (
    DuplicateExecution,
    ExecutionFinished,
    ExecutionNotFound,
    ExecutionNotResumable,
    StepNotInHistory,
)
from .pools import transaction
from .starting import check_id
from .threads import in_thread

RESUMABLE = frozenset({"failed", "timed_out", "cancelled"})
# How many of a history's keys an unknown `from_step` error lists.
_KEYS_SHOWN = 20


def _locked(conn: psycopg.Connection, execution_id: str, doing: str) -> tuple[str, bool, bool]:
    """Lock the execution (its workflow task, then its row); its status, whether it is paused,
    whether it ever began. ExecutionNotFound for an unknown id."""
    conn.execute(sql.LOCK_EXECUTION_TASK, {"id": execution_id})
    row = conn.execute(sql.SELECT_EXECUTION_FOR_UPDATE, {"id": execution_id}).fetchone()
    if row is None:
        raise ExecutionNotFound(f"cannot {doing}: no execution with id {execution_id!r}")
    return row[0], row[1], row[2]


def _set_paused(execution_id: str, paused: bool, database_url: str | None) -> bool:
    doing = "pause" if paused else "unpause"
    with transaction(resolve_url(database_url)) as conn:
        status, was_paused, _ = _locked(conn, execution_id, doing)
        if status in TERMINAL:
            raise ExecutionFinished(
                f"cannot {doing} execution {execution_id!r}: it is already {status}; nothing was changed"
            )
        if was_paused == paused:
            return False
        conn.execute(sql.SET_EXECUTION_PAUSED, {"id": execution_id, "paused": paused})
        conn.execute(sql.SET_TASKS_PAUSED, {"id": execution_id, "paused": paused})
    return True


def pause(execution_id: str, *, database_url: str | None = None) -> bool:
    """Pause an execution: its status reads `paused` and nothing of it runs until `unpause`.

    A step running at that moment finishes and its checkpoint is kept; the execution stops there.
    A paused execution keeps its place: a sleep's deadline, an event wait (events sent meanwhile
    are kept), its queue slot. True if it was paused now, False if it already was. Raises
    ExecutionNotFound for an unknown id, ExecutionFinished if it has ended.
    """
    return _set_paused(execution_id, True, database_url)


def unpause(execution_id: str, *, database_url: str | None = None) -> bool:
    """Let a paused execution run on from where it stopped; what came due meanwhile (a sleep's end,
    an event) runs at once. True if it was unpaused now, False if it was not paused."""
    return _set_paused(execution_id, False, database_url)


def resume(execution_id: str, *, database_url: str | None = None) -> ExecutionHandle:
    """Run a failed, timed-out or cancelled execution on from its first unfinished step.

    Its checkpoints are kept: the steps that completed do not run again. The failed step it did not
    get past runs again with a fresh retry budget (its attempts so far stay on record, no longer
    counted), and the workflow timeout counts again from the moment it begins anew. Deploy the fix
    first: the workers replay the history with the code they run. Raises ExecutionNotFound for an
    unknown id and ExecutionNotResumable if it is pending, running, paused or completed. Returns
    its handle (`zart.resume(id).result()` waits for the new end).
    """
    url = resolve_url(database_url)
    with transaction(url) as conn:
        status, paused, _ = _locked(conn, execution_id, "resume")
        if status not in RESUMABLE:
            shown = "paused" if paused and status not in TERMINAL else status
            hint = {"paused": " (unpause it)", "completed": " (fork it to run part of it again)"}
            raise ExecutionNotResumable(
                f"cannot resume execution {execution_id!r}: it is {shown}{hint.get(shown, '')}; "
                "only a failed, timed_out or cancelled execution can be resumed"
            )
        conn.execute(sql.RESUME_FORGET_FAILURE, {"id": execution_id})
        conn.execute(sql.RESUME_FRESH_BUDGETS, {"id": execution_id})
        (workflow,) = conn.execute(sql.RESUME_EXECUTION, {"id": execution_id}).fetchone()
    return ExecutionHandle(execution_id, workflow, url, created=False)


def fork(
    execution_id: str,
    *,
    from_step: str | int,
    id: str | None = None,
    database_url: str | None = None,
) -> ExecutionHandle:
    """Start a new execution of the same workflow and input that runs on from `from_step`.

    `from_step` is a checkpoint key of the execution's history (`charge-card#1`) or a position in it
    (0 is the first entry). The checkpoints before it are copied; that step and everything after it
    run again, with the code deployed now. The original is unchanged. The new execution's id is
    `id`, or a new UUID; it records where it was forked from (`zart show` shows it, both ways).
    Returns the new execution's handle. Raises ExecutionNotFound for an unknown id,
    StepNotInHistory for a key or position that is not in the history, DuplicateExecution if `id`
    is taken.
    """
    new_id = str(uuid.uuid4()) if id is None else check_id(id)
    if isinstance(from_step, bool) or not isinstance(from_step, (str, int)):
        raise TypeError(f"from_step must be a step key or a position, not {type(from_step).__name__}")
    url = resolve_url(database_url)
    with transaction(url) as conn:
        source = conn.execute(sql.SELECT_EXECUTION_WORKFLOW, {"id": execution_id}).fetchone()
        if source is None:
            raise ExecutionNotFound(f"cannot fork: no execution with id {execution_id!r}")
        position, forked_at = _fork_point(conn, execution_id, from_step)
        created, _copied, _ = conn.execute(
            sql.FORK_EXECUTION,
            {"source": execution_id, "id": new_id, "position": position, "forked_at": forked_at},
        ).fetchone()
        if not created:
            raise DuplicateExecution(
                f"cannot fork {execution_id!r} as {new_id!r}: an execution with that id exists"
            )
    return ExecutionHandle(new_id, source[0], url)


def _fork_point(conn: psycopg.Connection, execution_id: str, from_step: str | int) -> tuple[int, str]:
    """The history position to fork at, and how the new execution records it (the step's key).

    A key is looked up by its index entry; only an unknown one reads the first keys, to list them."""
    if isinstance(from_step, int):
        length, key = conn.execute(sql.HISTORY_AT, {"id": execution_id, "seq": from_step}).fetchone()
        if not 0 <= from_step <= length:
            raise StepNotInHistory(
                f"cannot fork {execution_id!r} from position {from_step}: its history has "
                f"positions 0 to {length} (a position is where a step is, or the end)"
            )
        return from_step, key if key is not None else f"position {from_step}"
    found = conn.execute(sql.SELECT_STEP_POSITION, {"id": execution_id, "key": from_step}).fetchone()
    if found is None:
        length, _ = conn.execute(sql.HISTORY_AT, {"id": execution_id, "seq": -1}).fetchone()
        keys = [
            row[0]
            for row in conn.execute(sql.SELECT_HISTORY_KEYS, {"id": execution_id, "limit": _KEYS_SHOWN})
        ]
        shown = ", ".join(repr(key) for key in keys) or "none: it has no history yet"
        more = f" and {length - _KEYS_SHOWN} more" if length > _KEYS_SHOWN else ""
        raise StepNotInHistory(
            f"cannot fork {execution_id!r} from step {from_step!r}: its history has no such key "
            f"(its keys: {shown}{more})"
        )
    return found[0], from_step


async def apause(execution_id: str, *, database_url: str | None = None) -> bool:
    return await in_thread(pause, execution_id, database_url=database_url)


async def aunpause(execution_id: str, *, database_url: str | None = None) -> bool:
    return await in_thread(unpause, execution_id, database_url=database_url)


async def aresume(execution_id: str, *, database_url: str | None = None) -> ExecutionHandle:
    return await in_thread(resume, execution_id, database_url=database_url)


async def afork(
    execution_id: str, *, from_step: str | int, id: str | None = None, database_url: str | None = None
) -> ExecutionHandle:
    return await in_thread(fork, execution_id, from_step=from_step, id=id, database_url=database_url)
