"""The dashboard's pages: overview, executions, one execution, queues, schedules.

Each page checks its query, reads what it shows in one hop to a thread of the API's read lane
(`reads`), and renders its template (`render.page`). Bad input is a page that says what is wrong,
with the status the API would answer; an unknown execution is a 404 page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ... import client
from ..errors import ApiError, logged_error
from ..lanes import in_thread
from ..validation import MAX_WORKFLOW_NAME_LENGTH, check_name, segment
from . import charts, reads, timeline
from .render import error_page, page

LIST_PARAMETERS = ("status", "workflow", "id", "since", "until", "after_time", "after_id")
MAX_PREFIX_LENGTH = 200


async def failed_page(request: Request, exc: Exception) -> Response:
    """What a page shows for an error: the API's status and message (500 only for a bug, logged)."""
    error = logged_error(exc, request)
    return error_page(request, error.status, error.message)


def guarded(fn: Any) -> Any:
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:
            return await failed_page(request, exc)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _no_query(request: Request, allowed: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown query parameter {unknown[0]!r}")


@guarded
async def overview(request: Request) -> Response:
    _no_query(request)
    found = await in_thread(request, "read", reads.overview)
    return page(request, "overview.html", overview=found, chart=charts.throughput(found.per_minute))


def _moment(request: Request, name: str) -> datetime | None:
    """A time of the form: `YYYY-MM-DDTHH:MM[:SS]` in UTC (what <input type=datetime-local> sends)
    or ISO 8601 with an offset."""
    text = request.query_params.get(name, "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400,
            "invalid_request",
            f"{name!r} must be a time such as 2026-11-27T14:30 (UTC), not {text[:40]!r}",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def list_filters(request: Request) -> reads.ListFilters:
    """The executions page's query, checked: ApiError(400) naming what is wrong."""
    unknown = sorted(set(request.query_params) - set(LIST_PARAMETERS))
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown query parameter {unknown[0]!r}")
    for name in request.query_params:
        if len(request.query_params.getlist(name)) > 1:
            raise ApiError(400, "invalid_request", f"query parameter {name!r} is repeated")
    values = {name: request.query_params.get(name, "").strip() or None for name in LIST_PARAMETERS}
    status = values["status"]
    if status is not None and status not in client.STATUSES:
        raise ApiError(
            400,
            "invalid_request",
            f"unknown status {status!r}; the statuses are {', '.join(client.STATUSES)}",
        )
    workflow = values["workflow"]
    if workflow is not None:
        check_name(workflow, "the workflow filter", MAX_WORKFLOW_NAME_LENGTH)
    prefix = values["id"]
    if prefix is not None:
        check_name(prefix, "the id prefix", MAX_PREFIX_LENGTH)
    after_id = values["after_id"]
    if after_id is not None:
        check_name(after_id, "'after_id'")
    since, until, after_time = (
        _moment(request, "since"),
        _moment(request, "until"),
        _moment(request, "after_time"),
    )
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "invalid_request", "'until' must be later than 'since'")
    return reads.ListFilters(status, workflow, prefix, since, until, after_time, after_id)


@guarded
async def executions(request: Request) -> Response:
    filters = list_filters(request)
    found = await in_thread(request, "read", lambda url: reads.executions(url, filters))
    following = None
    if found.more:
        last = found.rows[-1]
        following = {
            "status": filters.status,
            "workflow": filters.workflow,
            "id": filters.prefix,
            "since": _shown_moment(filters.since),
            "until": _shown_moment(filters.until),
            "after_time": None if filters.by_id else last.created_at.isoformat(),
            "after_id": last.id,
        }
    return page(
        request,
        "executions.html",
        filters=filters,
        found=found,
        following=following,
        statuses=client.STATUSES,
        shown_since=_shown_moment(filters.since),
        shown_until=_shown_moment(filters.until),
        paged=filters.after_id is not None,
    )


def _shown_moment(moment: datetime | None) -> str:
    """A time as a datetime-local input shows it (UTC, to the second)."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


@guarded
async def execution(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")
    _no_query(request, frozenset({"done"}))  # `done`: the action just done, from its redirect
    detail = await in_thread(request, "read", lambda url: reads.execution(url, execution_id))
    drawn = timeline.build(detail.info, detail.steps, detail.attempts, detail.now)
    return page(
        request,
        "execution.html",
        detail=detail,
        info=detail.info,
        timeline=drawn,
        done=request.query_params.get("done"),
        resumable=detail.info.status in reads.FAILED_STATUSES,
    )


@guarded
async def queues(request: Request) -> Response:
    _no_query(request)
    return page(request, "queues.html", queues=await in_thread(request, "read", reads.queues))


@guarded
async def schedules(request: Request) -> Response:
    _no_query(request)
    return page(request, "schedules.html", schedules=await in_thread(request, "read", reads.schedules))
