"""The endpoints of the HTTP API and the Starlette application that routes to them.

Every endpoint validates its request completely before touching the database, then makes one hop
to a worker thread (`anyio.to_thread.run_sync`) that runs the blocking client functions of
`zart.client` on a psycopg pool: the event loop never waits on PostgreSQL. Which threads and which
pool, with which time limits, is the request's lane (see `lanes`).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .. import client, operating, pools, scheduler, sql, streams, waiting
from .. import metrics as zart_metrics
from ..client import STATUSES
from ..queue_admin import queue_stats
from ..views import SHOWN_CHILDREN, execution_json, queue_json, schedule_json, summary_json
from . import dashboard
from .dashboard.auth import DashboardGate
from .dashboard.pages import failed_page
from .dashboard.session import Signer
from .errors import endpoint, http_exception, invalid, json_response
from .lanes import HEALTH_POOL_WAIT, await_in_lane, in_thread, lanes
from .middleware import BearerAuth, BodyDeadline, RawPath, is_api_path
from .openapi import openapi_document
from .validation import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MAX_WORKFLOW_NAME_LENGTH,
    START_OPTIONS,
    batch_lists,
    check_name,
    json_object,
    optional_name,
    query_value,
    segment,
    start_options,
)

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
DEFAULT_LOCK_TIMEOUT = 2.0
DEFAULT_STATEMENT_TIMEOUT = 5.0
DEFAULT_CLIENT_TIMEOUT = 15.0


@attrs.frozen
class Settings:
    """What one `zart serve` process needs; every worker process of `--workers N` gets the same."""

    database_url: str
    token: str | None = attrs.field(default=None, repr=False)
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    apps: tuple[str, ...] = ()
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT  # seconds a request waits on a locked row
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT  # seconds one of its statements may run
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT  # seconds a client has for its headers, or its body
    # The dashboard's signing key when there is no token (with one, its keys derive from the token):
    # drawn once in the parent, so every process of `--workers N` accepts the others' sessions.
    secret: bytes = attrs.field(factory=lambda: secrets.token_bytes(32), repr=False)


def execution_path(execution_id: str) -> str:
    return f"/v1/executions/{quote(execution_id, safe='')}"


def _workflow(body: dict[str, Any]) -> str:
    if "workflow" not in body:
        raise invalid("missing field 'workflow' (the name of the workflow to start)")
    return check_name(body["workflow"], "field 'workflow'", MAX_WORKFLOW_NAME_LENGTH)


@endpoint
async def start_execution(request: Request) -> Response:
    body = await json_object(request, ("workflow", "input", "id", *START_OPTIONS), required=True)
    workflow = _workflow(body)
    execution_id = optional_name(body, "id", "field 'id'")
    options = start_options(body)

    state = request.app.state
    lane = state.lanes["start"]
    started = await await_in_lane(
        lane,
        state.limiters["start"],
        client.astart_one,
        workflow,
        body.get("input"),
        execution_id,
        lane.url,
        options,
    )
    return json_response(
        started, 201 if started["created"] else 200, {"Location": execution_path(started["id"])}
    )


@endpoint
async def start_executions(request: Request) -> Response:
    """A batch start: one `zart.start_many` call, so one statement and one transaction for them all."""
    body = await json_object(request, ("workflow", "inputs", "ids", *START_OPTIONS), required=True)
    workflow = _workflow(body)
    inputs, ids = batch_lists(body)
    options = start_options(body)

    def start(url: str) -> list[dict[str, Any]]:
        handles = client.start_many(workflow, inputs, ids, database_url=url, **options)
        return [{"id": handle.id, "created": handle.created} for handle in handles]

    started = await in_thread(request, "write", start)
    created = any(item["created"] for item in started)
    return json_response({"executions": started}, 201 if created else 200)


@endpoint
async def get_execution(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")

    def fetch(url: str) -> dict[str, Any]:
        handle, info = client.get_with_info(execution_id, database_url=url)
        children = handle.children(limit=SHOWN_CHILDREN) if info.children else []
        return execution_json(info, handle.steps(), children)

    return json_response(await in_thread(request, "read", fetch))


@endpoint
async def list_executions(request: Request) -> Response:
    unknown = sorted(set(request.query_params) - {"status", "workflow", "limit"})
    if unknown:
        raise invalid(f"unknown query parameter {unknown[0]!r} (the parameters are status, workflow, limit)")
    status = query_value(request, "status")
    if status is not None and status not in STATUSES:
        raise invalid(f"unknown status {status!r}; the statuses are {', '.join(STATUSES)}")
    workflow = query_value(request, "workflow")
    if workflow is not None:
        check_name(workflow, "query parameter 'workflow'", MAX_WORKFLOW_NAME_LENGTH)
    limit_text = query_value(request, "limit")
    limit = DEFAULT_LIST_LIMIT
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_LIST_LIMIT:
            raise invalid(f"query parameter 'limit' must be an integer from 1 to {MAX_LIST_LIMIT}")
        limit = int(limit_text)

    def fetch(url: str) -> list[dict[str, Any]]:
        found = client.list_executions(status=status, workflow=workflow, limit=limit, database_url=url)
        return [summary_json(info) for info in found]

    return json_response({"executions": await in_thread(request, "read", fetch)})


@endpoint
async def send_event(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")
    name = segment(request, "name", "event name")
    body = await json_object(request, ("payload", "key"), required=False)
    key = optional_name(body, "key", "field 'key'")

    def send(url: str) -> bool:
        return client.send_event(execution_id, name, body.get("payload"), key=key, database_url=url)

    delivered = await in_thread(request, "write", send)
    return json_response({"execution_id": execution_id, "event": name, "delivered": delivered}, 202)


@endpoint
async def cancel_execution(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")
    body = await json_object(request, ("reason",), required=False)
    reason = body.get("reason", "cancelled")
    if not isinstance(reason, str) or len(reason) > 1000:
        raise invalid("field 'reason' must be a string of at most 1000 characters")

    def cancel(url: str) -> dict[str, Any]:
        cancelled = client.cancel(execution_id, reason=reason, database_url=url)
        status = client.get(execution_id, database_url=url).status()
        return {"id": execution_id, "status": status, "cancelled": cancelled}

    return json_response(await in_thread(request, "write", cancel), 202)


@endpoint
async def resume_execution(request: Request) -> Response:
    """Run a failed, timed-out or cancelled execution on from its first unfinished step."""
    execution_id = segment(request, "id", "execution id")
    await json_object(request, (), required=False)

    def resume(url: str) -> dict[str, Any]:
        operating.resume(execution_id, database_url=url)
        return {"id": execution_id, "status": client.get(execution_id, database_url=url).status()}

    return json_response(await in_thread(request, "write", resume), 202)


@endpoint
async def fork_execution(request: Request) -> Response:
    """A new execution of the same workflow and input, run on from `from_step` (a key or position)."""
    execution_id = segment(request, "id", "execution id")
    body = await json_object(request, ("from_step", "id"), required=True)
    if "from_step" not in body:
        raise invalid("field 'from_step' is required: a step key of the history, or a position in it")
    from_step = body["from_step"]
    if (
        isinstance(from_step, bool)
        or not isinstance(from_step, (str, int))
        or (isinstance(from_step, int) and from_step < 0)
    ):
        raise invalid("field 'from_step' must be a step key (a string) or a position (an integer >= 0)")
    if isinstance(from_step, str):
        check_name(from_step, "field 'from_step'")
    new_id = optional_name(body, "id", "field 'id'")

    def fork(url: str) -> dict[str, Any]:
        handle = operating.fork(execution_id, from_step=from_step, id=new_id, database_url=url)
        info = handle.info()
        return {
            "id": info.id,
            "workflow": info.workflow,
            "status": info.status,
            "forked_from": info.forked_from,
            "forked_at": info.forked_at,
        }

    forked = await in_thread(request, "write", fork)
    return json_response(forked, 201, {"Location": execution_path(forked["id"])})


def _pausing(paused: bool) -> Callable[[Request], Any]:
    field = "paused" if paused else "unpaused"

    @endpoint
    async def set_paused(request: Request) -> Response:
        execution_id = segment(request, "id", "execution id")
        await json_object(request, (), required=False)

        def change(url: str) -> dict[str, Any]:
            operation = operating.pause if paused else operating.unpause
            changed = operation(execution_id, database_url=url)
            return {
                "id": execution_id,
                "status": client.get(execution_id, database_url=url).status(),
                field: changed,
            }

        return json_response(await in_thread(request, "write", change), 202)

    return set_paused


# An idle stream sends a comment this often, so that proxies keep the connection and a reader that
# went away is noticed.
KEEPALIVE_SECONDS = 15.0
_MAX_SEQ = 2**31 - 1


def _last_event_id(request: Request) -> int:
    """The `Last-Event-ID` header (EventSource sends it when it reconnects): the values after it."""
    header = request.headers.get("last-event-id")
    if header is None or header.strip() == "":
        return 0
    text = header.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_SEQ:
        raise invalid("header 'Last-Event-ID' must be the id (a sequence number) of an event of this stream")
    return int(text)


def _sse(value: streams.StreamValue) -> bytes:
    data = (
        value.data
        if "\n" not in value.data and "\r" not in value.data
        else orjson.dumps(value.value).decode()
    )
    return f"id: {value.seq}\ndata: {data}\n\n".encode()


@endpoint
async def stream_values(request: Request) -> Response:
    """The values of one stream of an execution as Server-Sent Events (`zart.emit`): all of them after
    `Last-Event-ID`, then each as it is committed, woken by its NOTIFY (zart.streams); an `end` event
    once the execution has ended and its last value is out."""
    execution_id = segment(request, "id", "execution id")
    name = check_name(segment(request, "name", "stream name"), "stream name", streams.MAX_STREAM_NAME_LENGTH)
    after = _last_event_id(request)
    url = request.app.state.lanes["read"].url

    async def read() -> tuple[bool, list[streams.StreamValue]]:
        return await in_thread(
            request, "read", lambda lane_url: streams.read_values(lane_url, execution_id, name, after)
        )

    # The first read before the answer: an unknown execution is a 404 in the API's error shape.
    first = await read()

    async def events() -> AsyncIterator[bytes]:
        nonlocal after
        ended, values = first
        # That read came before the registration: read again once registered, lest a value committed
        # in between wait for the next notification.
        registered_read = False
        async with waiting.awatch(url, execution_id, streams=True) as woken:
            idle = 0.0
            while True:
                for value in values:
                    after = value.seq
                    yield _sse(value)
                if values:
                    idle = 0.0
                if len(values) < streams.PAGE and registered_read:
                    if ended:
                        yield b"event: end\ndata: {}\n\n"
                        return
                    await woken.wait(waiting.FALLBACK_SECONDS)
                    idle += waiting.FALLBACK_SECONDS
                    if idle >= KEEPALIVE_SECONDS:
                        idle = 0.0
                        yield b": keep-alive\n\n"
                woken.clear()
                registered_read = True
                ended, values = await read()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@endpoint
async def list_queues(request: Request) -> Response:
    """Every queue's limits and counts, on the read lane (it locks nothing)."""
    if request.query_params:
        raise invalid(f"unknown query parameter {next(iter(request.query_params))!r} (there are none)")

    def fetch(url: str) -> list[dict[str, Any]]:
        return [queue_json(info) for info in queue_stats(database_url=url)]

    return json_response({"queues": await in_thread(request, "read", fetch)})


@endpoint
async def metrics(request: Request) -> Response:
    """The database's Prometheus metrics (zart.metrics), on the read lane."""
    if request.query_params:
        raise invalid(f"unknown query parameter {next(iter(request.query_params))!r} (there are none)")
    text = await in_thread(request, "read", zart_metrics.read)
    return Response(text, media_type=zart_metrics.CONTENT_TYPE)


@endpoint
async def list_schedules(request: Request) -> Response:
    """Every schedule: its rule, next firing, last execution and pause state, on the read lane."""
    if request.query_params:
        raise invalid(f"unknown query parameter {next(iter(request.query_params))!r} (there are none)")

    def fetch(url: str) -> list[dict[str, Any]]:
        return [schedule_json(info) for info in scheduler.list_schedules(database_url=url)]

    return json_response({"schedules": await in_thread(request, "read", fetch)})


@endpoint
async def healthz(request: Request) -> Response:
    """PostgreSQL answers, on the health lane: never behind requests that wait on locked rows."""

    def ping(url: str) -> None:
        with pools.shared_pool(url).connection(timeout=HEALTH_POOL_WAIT) as conn:
            conn.execute(sql.PING)

    await in_thread(request, "health", ping)
    return json_response({"status": "ok"})


@endpoint
async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


async def any_exception(request: Request, exc: Exception) -> Response:
    """An error outside an endpoint (an unknown path, a wrong method): the API's error shape for the
    API's paths, a page for the dashboard's."""
    if is_api_path(request.url.path):
        return await http_exception(request, exc)
    return await failed_page(request, exc)


def create_app(settings: Settings) -> Starlette:
    """The ASGI application, on asyncio (uvicorn, see `server`) or trio: its code waits through anyio,
    and the client code it calls (`zart.client`, `zart.batching`) serves either loop."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.limiters = {name: lane.limiter() for name, lane in app.state.lanes.items()}
        yield

    signer = Signer.for_token(settings.token, settings.secret)
    app = Starlette(
        routes=[
            Route("/v1/executions", start_execution, methods=["POST"]),
            Route("/v1/executions:batch", start_executions, methods=["POST"]),
            Route("/v1/executions", list_executions, methods=["GET"]),
            Route("/v1/executions/{id}", get_execution, methods=["GET"]),
            Route("/v1/executions/{id}/events/{name}", send_event, methods=["POST"]),
            Route("/v1/executions/{id}/streams/{name}", stream_values, methods=["GET"]),
            Route("/v1/executions/{id}/cancel", cancel_execution, methods=["POST"]),
            Route("/v1/executions/{id}/resume", resume_execution, methods=["POST"]),
            Route("/v1/executions/{id}/fork", fork_execution, methods=["POST"]),
            Route("/v1/executions/{id}/pause", _pausing(True), methods=["POST"]),
            Route("/v1/executions/{id}/unpause", _pausing(False), methods=["POST"]),
            Route("/v1/queues", list_queues, methods=["GET"]),
            Route("/v1/schedules", list_schedules, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *dashboard.routes(),
        ],
        middleware=[
            Middleware(BodyDeadline, seconds=settings.client_timeout),
            Middleware(BearerAuth, token=settings.token),
            Middleware(DashboardGate, signer=signer, token_set=settings.token is not None),
            Middleware(RawPath),
        ],
        exception_handlers={HTTPException: any_exception, Exception: any_exception},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # `/v1/executions/` is no endpoint, not a redirect
    app.state.settings = settings
    app.state.signer = signer
    app.state.lanes = lanes(settings.database_url, settings.lock_timeout, settings.statement_timeout)
    app.state.openapi = orjson.dumps(openapi_document())
    return app
