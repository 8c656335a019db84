"""The JSON shapes of executions and queues, shared by the HTTP API and the CLI's `--json`.

One definition per shape, so that a script reading `zart show --json` and a client of
`GET /v1/executions/{id}` (or `zart queues --json` and `GET /v1/queues`) see the same fields in the
same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: `zart status` need not import the scheduler (trio, croniter)
    from .client import ChildRecord, ExecutionInfo, StepRecord
    from .queue_admin import QueueInfo
    from .scheduler import ScheduleInfo


def _execution_fields(info: ExecutionInfo, *, with_input: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "queue": info.queue,
        "key": info.key,
        "priority": info.priority,
    }
    if with_input:
        data["input"] = info.input
    data.update(
        {
            "result": info.result,
            "error": info.error,
            "created_at": info.created_at,
            "started_at": info.started_at,
            "finished_at": info.finished_at,
        }
    )
    return data


def status_json(info: ExecutionInfo) -> dict[str, Any]:
    """How an execution ended (or stands), without its input: `zart status --json`."""
    return _execution_fields(info, with_input=False)


def step_json(step: StepRecord) -> dict[str, Any]:
    """One checkpoint of an execution's history."""
    return {
        "key": step.key,
        "position": step.position,
        "kind": step.kind,
        "status": step.status,
        "result": step.result,
        "error": step.error,
        "attempts": step.attempts,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "wake_at": step.wake_at,
    }


def execution_json(
    info: ExecutionInfo, steps: list[StepRecord], children: list[ChildRecord] = ()
) -> dict[str, Any]:
    """An execution with its input and steps: `GET /v1/executions/{id}` and `zart show --json`; its
    parent and children (zart.child) by id: the first `SHOWN_CHILDREN` of them, and their count."""
    data = _execution_fields(info, with_input=True)
    data["forked_from"] = info.forked_from
    data["forked_at"] = info.forked_at
    data["forks"] = list(info.forks)
    data["resumes"] = info.resumes
    data["parent"] = None if info.parent_id is None else {"id": info.parent_id, "key": info.parent_key}
    data["children"] = [
        {"id": c.id, "workflow": c.workflow, "status": c.status, "key": c.key} for c in children
    ]
    data["children_count"] = info.children
    data["steps"] = [step_json(step) for step in steps]
    return data


# How many children an execution's view lists (its `children_count` says how many there are).
SHOWN_CHILDREN = 100


def summary_json(info: ExecutionInfo) -> dict[str, Any]:
    """One line of a listing: `GET /v1/executions` and `zart list --json`."""
    return {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": info.created_at,
        "finished_at": info.finished_at,
    }


def queue_json(info: QueueInfo) -> dict[str, Any]:
    """One queue: `GET /v1/queues` and `zart queues --json`."""
    return {
        "name": info.name,
        "concurrency": info.concurrency,
        "per_key": info.per_key,
        "rate": info.rate,
        "overridden": info.overridden,
        "ready": info.ready,
        "in_progress": info.in_progress,
        "delayed": info.delayed,
        "oldest_ready_seconds": info.oldest_ready_seconds,
    }


def schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    """One schedule: `GET /v1/schedules` and `zart schedules --json`."""
    return {
        "name": info.name,
        "cron": info.cron,
        "timezone": info.timezone,
        "catch_up": info.catch_up,
        "workflow": info.workflow,
        "next_fire_at": info.next_fire_at,
        "last_execution": info.last_execution,
        "last_fired_at": info.last_fired_at,
        "paused": info.paused,
    }
