"""The HTTP API (`zart serve`): Starlette on Hypercorn's trio worker.

Every endpoint validates its request completely before touching the database, then makes one hop
to a worker thread (`trio.to_thread.run_sync`) that runs the blocking client functions of
`zart.client` on the process's psycopg pool: the event loop never waits on PostgreSQL. Bodies are
JSON through orjson, both ways. Every error is `{"error": {"code", "message"}}`: 400, 401, 404, 405,
409, 413 or 422 for a bad request, 503 when PostgreSQL does not answer; a 500 is a bug.

Paths are matched on the raw (still percent-encoded) path and each segment is decoded on its own,
so an execution id or an event name may contain `/` (sent as `%2F`).
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote

import attrs
import orjson
import psycopg
import trio
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__, client, db, schema
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateExecution,
    ExecutionFinished,
    ExecutionNotFound,
    UnknownWorkflow,
)
from .logs import log_event

log = logging.getLogger("zart.http")

TOKEN_ENV = "ZART_API_TOKEN"
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
STATUSES = ("pending", "running", "sleeping", "waiting", "completed", "failed", "timed_out", "cancelled")
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
MAX_ID_LENGTH = client.MAX_ID_LENGTH
MAX_WORKFLOW_NAME_LENGTH = 200  # as zart.workflow() allows
# Threads that may wait on the database at once: the size of the client pool (`db.shared_pool`),
# so that a request waits for a connection here, cancellably, rather than in a thread.
DB_THREADS = 8
HEALTH_TIMEOUT = 5.0


@attrs.frozen
class Settings:
    """What one `zart serve` process needs; every worker process gets the same."""

    database_url: str
    token: str | None = attrs.field(default=None, repr=False)
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    apps: tuple[str, ...] = ()


# -- errors ------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A request that cannot be served: its status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return json_response(body, error.status, error.headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def api_error(exc: BaseException) -> ApiError:
    """The API error for an exception (500 `internal_error` for one nobody expected)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownWorkflow):
        return ApiError(422, "unknown_workflow", str(exc))
    if isinstance(exc, DuplicateExecution):
        return ApiError(409, "duplicate_execution", str(exc))
    if isinstance(exc, ExecutionNotFound):
        return ApiError(404, "execution_not_found", str(exc))
    if isinstance(exc, ExecutionFinished):
        return ApiError(409, "execution_finished", str(exc))
    if isinstance(exc, (DatabaseUnavailable, PoolTimeout, psycopg.OperationalError)):
        return ApiError(503, "database_unavailable", "the database is unavailable; try again later")
    if isinstance(exc, ClientDisconnect):
        return ApiError(400, "client_disconnected", "the client went away before its body arrived")
    if isinstance(exc, HTTPException):
        message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
            exc.status_code, str(exc.detail)
        )
        return ApiError(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), message, exc.headers)
    return ApiError(500, "internal_error", "internal error (a bug in Zart: see the server's log)")


def _logged(exc: BaseException, request: Request) -> ApiError:
    error = api_error(exc)
    if error.status >= 500:
        log.error(
            "%s %s failed: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
            exc_info=error.status == 500,
        )
    return error


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Endpoint) -> Endpoint:
    """Every error of an endpoint becomes the API's error response."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:
            return error_response(_logged(exc, request))

    return wrapper


async def _http_exception(request: Request, exc: Exception) -> Response:
    return error_response(_logged(exc, request))


# -- authentication and paths ---------------------------------------------------------------------------


# The request's body is not read before a 401: the connection cannot carry another request, so say
# so, or a client reusing it races the server's close ("server disconnected").
_CLOSE = {"Connection": "close"}


class BearerAuth:
    """With a token set, every request but `GET /healthz` must carry `Authorization: Bearer TOKEN`.

    The token is compared with `hmac.compare_digest`, in time independent of where it differs.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        if not values:
            error = ApiError(
                401,
                "unauthorized",
                "this API needs an 'Authorization: Bearer TOKEN' header",
                {"WWW-Authenticate": "Bearer", **_CLOSE},
            )
        else:
            scheme, _, presented = values[0].partition(b" ")
            if (
                len(values) == 1
                and scheme.lower() == b"bearer"
                and hmac.compare_digest(presented, self.expected)
            ):
                await self.app(scope, receive, send)
                return
            error = ApiError(
                401,
                "unauthorized",
                "invalid bearer token",
                {"WWW-Authenticate": 'Bearer error="invalid_token"', **_CLOSE},
            )
        await error_response(error)(scope, receive, send)


class RawPath:
    """Route on the raw path: `%2F` inside a segment stays part of that segment (see `segment`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            scope = dict(scope, path=raw.decode("latin-1"))
        await self.app(scope, receive, send)


def segment(request: Request, name: str, what: str) -> str:
    """A path parameter, percent-decoded, checked like an execution id."""
    return check_name(unquote(request.path_params[name], errors="surrogateescape"), what)


# -- validation ------------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_name(value: Any, what: str, max_length: int = MAX_ID_LENGTH) -> str:
    """An id, a workflow or event name, a key: 1 to max_length characters of UTF-8, no control ones."""
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string, not {_json_type(value)}")
    if not value or len(value) > max_length:
        raise invalid(f"{what} must be 1 to {max_length} characters long, not {len(value)}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise invalid(f"{what} is not valid UTF-8") from None
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise invalid(f"{what} {value!r} contains control characters")
    return value


_CONTENT_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")


def _check_content_type(request: Request) -> None:
    header = request.headers.get("content-type")
    media_type, *params = (header or "").split(";")
    if not _CONTENT_TYPE.match(media_type.strip().lower()):
        shown = f"{header!r}" if header else "none"
        raise ApiError(
            400,
            "unsupported_content_type",
            f"send the body as 'Content-Type: application/json' (got {shown})",
        )
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise ApiError(400, "unsupported_content_type", f"JSON bodies are UTF-8, not {value.strip()!r}")


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes", _CLOSE)
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, "bad_request", f"invalid Content-Length {length!r}")
        if int(length) > limit:
            raise too_large
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, fields: tuple[str, ...], *, required: bool) -> dict[str, Any]:
    """The body as a JSON object with only `fields`; {} for an empty optional body."""
    if required:
        try:
            _check_content_type(request)
        except ApiError as exc:  # answered before the body was read
            exc.headers = {**(exc.headers or {}), **_CLOSE}
            raise
    body = await _read_body(request, request.app.state.settings.max_body_size)
    if not body and not required:
        return {}
    if not required:
        _check_content_type(request)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    expected = ", ".join(repr(field) for field in fields)
    if not isinstance(value, dict):
        raise invalid(f"the body must be a JSON object with the fields {expected}, not {_json_type(value)}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r} (the fields are {expected})")
    return value


def optional_name(body: dict[str, Any], field: str, what: str) -> str | None:
    value = body.get(field)
    return None if value is None else check_name(value, what)


# -- representations --------------------------------------------------------------------------------------


def execution_json(info: client.ExecutionInfo, steps: list[client.StepRecord]) -> dict[str, Any]:
    return {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "input": info.input,
        "result": info.result,
        "error": info.error,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "steps": [
            {
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
            for step in steps
        ],
    }


def summary_json(info: client.ExecutionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status,
        "created_at": info.created_at,
        "finished_at": info.finished_at,
    }


def execution_path(execution_id: str) -> str:
    return f"/v1/executions/{quote(execution_id, safe='')}"


# -- endpoints -------------------------------------------------------------------------------------------


async def in_thread(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """The one hop of a request to a thread, where the blocking client code runs."""
    limiter = request.app.state.db_limiter
    return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)


def _url(request: Request) -> str:
    return request.app.state.settings.database_url


@endpoint
async def start_execution(request: Request) -> Response:
    body = await json_object(request, ("workflow", "input", "id"), required=True)
    if "workflow" not in body:
        raise invalid("missing field 'workflow' (the name of the workflow to start)")
    workflow = check_name(body["workflow"], "field 'workflow'", MAX_WORKFLOW_NAME_LENGTH)
    execution_id = optional_name(body, "id", "field 'id'")
    url = _url(request)

    def start() -> dict[str, Any]:
        handle = client.start(workflow, body.get("input"), id=execution_id, database_url=url)
        return {
            "id": handle.id,
            "workflow": handle.workflow,
            "status": handle.status(),
            "created": handle.created,
        }

    started = await in_thread(request, start)
    return json_response(
        started, 201 if started["created"] else 200, {"Location": execution_path(started["id"])}
    )


@endpoint
async def get_execution(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")
    url = _url(request)

    def fetch() -> dict[str, Any]:
        handle = client.get(execution_id, database_url=url)
        return execution_json(handle.info(), handle.steps())

    return json_response(await in_thread(request, fetch))


def _query_value(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(f"query parameter {name!r} is given {len(values)} times")
    return values[0] if values and values[0] != "" else None


@endpoint
async def list_executions(request: Request) -> Response:
    unknown = sorted(set(request.query_params) - {"status", "workflow", "limit"})
    if unknown:
        raise invalid(f"unknown query parameter {unknown[0]!r} (the parameters are status, workflow, limit)")
    status = _query_value(request, "status")
    if status is not None and status not in STATUSES:
        raise invalid(f"unknown status {status!r}; the statuses are {', '.join(STATUSES)}")
    workflow = _query_value(request, "workflow")
    if workflow is not None:
        check_name(workflow, "query parameter 'workflow'", MAX_WORKFLOW_NAME_LENGTH)
    limit_text = _query_value(request, "limit")
    limit = DEFAULT_LIST_LIMIT
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_LIST_LIMIT:
            raise invalid(f"query parameter 'limit' must be an integer from 1 to {MAX_LIST_LIMIT}")
        limit = int(limit_text)
    url = _url(request)

    def fetch() -> list[dict[str, Any]]:
        found = client.list_executions(status=status, workflow=workflow, limit=limit, database_url=url)
        return [summary_json(info) for info in found]

    return json_response({"executions": await in_thread(request, fetch)})


@endpoint
async def send_event(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")
    name = segment(request, "name", "event name")
    body = await json_object(request, ("payload", "key"), required=False)
    key = optional_name(body, "key", "field 'key'")
    url = _url(request)

    def send() -> bool:
        return client.send_event(execution_id, name, body.get("payload"), key=key, database_url=url)

    delivered = await in_thread(request, send)
    return json_response({"execution_id": execution_id, "event": name, "delivered": delivered}, 202)


@endpoint
async def cancel_execution(request: Request) -> Response:
    execution_id = segment(request, "id", "execution id")
    body = await json_object(request, ("reason",), required=False)
    reason = body.get("reason", "cancelled")
    if not isinstance(reason, str) or len(reason) > 1000:
        raise invalid("field 'reason' must be a string of at most 1000 characters")
    url = _url(request)

    def cancel() -> dict[str, Any]:
        cancelled = client.cancel(execution_id, reason=reason, database_url=url)
        status = client.get(execution_id, database_url=url).status()
        return {"id": execution_id, "status": status, "cancelled": cancelled}

    return json_response(await in_thread(request, cancel), 202)


@endpoint
async def healthz(request: Request) -> Response:
    url = _url(request)

    def ping() -> None:
        with db.shared_pool(url).connection(timeout=HEALTH_TIMEOUT) as conn:
            conn.execute("SELECT 1")

    await in_thread(request, ping)
    return json_response({"status": "ok"})


@endpoint
async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


# -- the application ---------------------------------------------------------------------------------------


def create_app(settings: Settings) -> Starlette:
    """The ASGI application; it must run under trio (Hypercorn's trio worker does)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db_limiter = trio.CapacityLimiter(DB_THREADS)
        yield

    app = Starlette(
        routes=[
            Route("/v1/executions", start_execution, methods=["POST"]),
            Route("/v1/executions", list_executions, methods=["GET"]),
            Route("/v1/executions/{id}", get_execution, methods=["GET"]),
            Route("/v1/executions/{id}/events/{name}", send_event, methods=["POST"]),
            Route("/v1/executions/{id}/cancel", cancel_execution, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        middleware=[Middleware(BearerAuth, token=settings.token), Middleware(RawPath)],
        exception_handlers={HTTPException: _http_exception, Exception: _http_exception},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # `/v1/executions/` is no endpoint, not a redirect
    app.state.settings = settings
    app.state.openapi = orjson.dumps(openapi_document())
    return app


def spawned_app(encoded: str) -> Starlette:
    """The app of a worker process of `--workers K` (Hypercorn spawns them and evaluates this call)."""
    from .cli import import_apps

    values = orjson.loads(bytes.fromhex(encoded))
    settings = Settings(
        values["database_url"], values["token"], values["max_body_size"], tuple(values["apps"])
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=values["log_level"], format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    import_apps(settings.apps)
    return create_app(settings)


# -- serving ------------------------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
}


def parse_size(text: str | int, what: str = "--max-body-size") -> int:
    """Bytes from `1048576`, `64KiB`, `1MiB`, `2MB`, `1M` (K, M and G are binary)."""
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise ConfigurationError(
                f"invalid {what} {text!r}: give bytes, or a number with a unit: 512KiB, 1MiB, 2MB"
            )
        size = int(match.group(1)) * _UNITS[match.group(2) and match.group(2).lower()]
    if size < 1:
        raise ConfigurationError(f"invalid {what} {text!r}: it must be at least 1 byte")
    return size


def _token_from_env() -> str | None:
    token = os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    if not token.strip():
        raise ConfigurationError(f"{TOKEN_ENV} is set but empty; unset it to serve without authentication")
    return token


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log_event(log, "http.stopping", signal=signal.Signals(signum).name)
            return


def serve(
    *,
    database_url: str | None,
    apps: tuple[str, ...] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    max_body_size: str | int = DEFAULT_MAX_BODY_SIZE,
) -> int:
    """Serve the API until SIGTERM or SIGINT; the exit code. The caller imported `apps` already."""
    from hypercorn.config import Config

    if workers < 1:
        raise ConfigurationError(f"--workers must be at least 1, not {workers}")
    settings = Settings(db.resolve_url(database_url), _token_from_env(), parse_size(max_body_size), apps)
    schema.migrate(settings.database_url)
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    log_event(
        log,
        "http.listening",
        url=f"http://{shown_host}:{bound_port}",
        workers=workers,
        authentication="on" if settings.token else "off",
        max_body_size=settings.max_body_size,
    )
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's socket owns the descriptor from here on
    config.worker_class = "trio"
    config.workers = workers
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    try:
        if workers == 1:
            from hypercorn.trio import serve as hypercorn_serve

            app = create_app(settings)
            trio.run(functools.partial(hypercorn_serve, app, config, shutdown_trigger=_until_signal))
            return 0
        from hypercorn.run import run

        encoded = orjson.dumps(
            {
                "database_url": settings.database_url,
                "token": settings.token,
                "max_body_size": settings.max_body_size,
                "apps": list(settings.apps),
                "log_level": logging.getLevelName(logging.getLogger().level),
            }
        ).hex()
        config.application_path = f"zart.http:spawned_app('{encoded}')"
        return run(config)
    finally:
        log_event(log, "http.stopped")


# -- the OpenAPI document -----------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json_body(schema_: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema_}}}


_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_ANY: dict[str, Any] = {"description": "any JSON value"}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (served at /openapi.json)."""
    errors = {
        "400": _error("malformed request: invalid JSON, a body not sent as application/json"),
        "401": _error("missing or wrong bearer token (when ZART_API_TOKEN is set)"),
        "413": _error("the body is larger than the server's --max-body-size"),
        "422": _error("well-formed JSON with missing or wrong fields, or invalid ids or names"),
        "503": _error("PostgreSQL does not answer"),
    }
    not_found = _error("no execution with this id")
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "the execution id, percent-encoded (`/` as `%2F`)",
        "schema": _NAME,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Zart HTTP API",
            "version": __version__,
            "description": (
                "Start, inspect, signal and cancel durable executions. Errors are "
                '`{"error": {"code", "message"}}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/executions": {
                "post": {
                    "operationId": "startExecution",
                    "summary": "Start an execution (idempotent on its id)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("StartRequest")}},
                    },
                    "responses": {
                        "201": _json_body(_ref("Started"), "started now"),
                        "200": _json_body(
                            _ref("Started"), "the id existed for this workflow: that execution, not a new one"
                        ),
                        "409": _error("the id exists for another workflow (code duplicate_execution)"),
                        **errors,
                    },
                },
                "get": {
                    "operationId": "listExecutions",
                    "summary": "The newest executions, optionally of one status and/or workflow",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [*STATUSES, ""]},
                        },
                        {
                            "name": "workflow",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": MAX_WORKFLOW_NAME_LENGTH},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIST_LIMIT,
                                "default": DEFAULT_LIST_LIMIT,
                            },
                        },
                    ],
                    "responses": {"200": _json_body(_ref("ExecutionList"), "newest first"), **errors},
                },
            },
            "/v1/executions/{id}": {
                "get": {
                    "operationId": "getExecution",
                    "summary": "An execution: status, input, result or error, and its steps",
                    "parameters": [id_param],
                    "responses": {
                        "200": _json_body(_ref("Execution"), "the execution"),
                        "404": not_found,
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/events/{name}": {
                "post": {
                    "operationId": "sendEvent",
                    "summary": "Deliver an event (kept until a wait of the workflow takes it)",
                    "parameters": [
                        id_param,
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "description": "the event name, percent-encoded",
                            "schema": _NAME,
                        },
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("EventRequest")}},
                    },
                    "responses": {
                        "202": _json_body(_ref("EventDelivery"), "stored (or its key was delivered before)"),
                        "404": not_found,
                        "409": _error("the execution already ended (code execution_finished)"),
                        **errors,
                    },
                }
            },
            "/v1/executions/{id}/cancel": {
                "post": {
                    "operationId": "cancelExecution",
                    "summary": "Cancel an execution (nothing of it runs any more)",
                    "parameters": [id_param],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("CancelRequest")}},
                    },
                    "responses": {
                        "202": _json_body(_ref("Cancellation"), "cancelled now, or it had already ended"),
                        "404": not_found,
                        **errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Health: the server answers and reaches PostgreSQL (no token needed)",
                    "security": [],
                    "responses": {
                        "200": _json_body(
                            {
                                "type": "object",
                                "properties": {"status": {"const": "ok"}},
                                "required": ["status"],
                            },
                            "healthy",
                        ),
                        "503": errors["503"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "the OpenAPI document", "content": {"application/json": {}}},
                        "401": errors["401"],
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "examples": [
                                        "invalid_json",
                                        "unsupported_content_type",
                                        "unauthorized",
                                        "not_found",
                                        "execution_not_found",
                                        "duplicate_execution",
                                        "execution_finished",
                                        "body_too_large",
                                        "invalid_request",
                                        "unknown_workflow",
                                        "database_unavailable",
                                    ],
                                },
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "StartRequest": {
                    "type": "object",
                    "required": ["workflow"],
                    "additionalProperties": False,
                    "properties": {
                        "workflow": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_WORKFLOW_NAME_LENGTH,
                            "description": "a workflow that --app imported or a worker registered",
                        },
                        "input": {**_ANY, "description": "the workflow's input (default null)"},
                        "id": {
                            "type": ["string", "null"],
                            "minLength": 1,
                            "maxLength": MAX_ID_LENGTH,
                            "description": "execution id, no control characters (default: a new UUID)",
                        },
                    },
                },
                "Started": {
                    "type": "object",
                    "required": ["id", "workflow", "status", "created"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "created": {"type": "boolean", "description": "false when the id existed"},
                    },
                },
                "Status": {"type": "string", "enum": list(STATUSES)},
                "Execution": {
                    "type": "object",
                    "required": [
                        "id",
                        "workflow",
                        "status",
                        "input",
                        "result",
                        "error",
                        "created_at",
                        "started_at",
                        "finished_at",
                        "steps",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "input": _ANY,
                        "result": {**_ANY, "description": "the result once completed, else null"},
                        "error": {
                            "oneOf": [{"type": "null"}, _ref("StoredError")],
                            "description": "the error of a failed or timed-out execution",
                        },
                        "created_at": {"type": "string", "format": "date-time"},
                        "started_at": _TIME,
                        "finished_at": _TIME,
                        "steps": {"type": "array", "items": _ref("Step")},
                    },
                },
                "StoredError": {
                    "type": "object",
                    "description": "type, message and traceback of the exception",
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "traceback": {"type": "string"},
                    },
                },
                "Step": {
                    "type": "object",
                    "required": [
                        "key",
                        "position",
                        "kind",
                        "status",
                        "result",
                        "error",
                        "attempts",
                        "started_at",
                        "finished_at",
                        "wake_at",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "key": {"type": "string", "description": "checkpoint key, e.g. charge-card#1"},
                        "position": {"type": "integer"},
                        "kind": {"type": "string", "enum": ["step", "sleep", "event"]},
                        "status": {"type": "string", "enum": ["completed", "failed", "waiting"]},
                        "result": _ANY,
                        "error": {"oneOf": [{"type": "null"}, _ref("StoredError")]},
                        "attempts": {"type": "integer"},
                        "started_at": _TIME,
                        "finished_at": _TIME,
                        "wake_at": {**_TIME, "description": "a sleep's or an event wait's deadline"},
                    },
                },
                "ExecutionSummary": {
                    "type": "object",
                    "required": ["id", "workflow", "status", "created_at", "finished_at"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": _ref("Status"),
                        "created_at": {"type": "string", "format": "date-time"},
                        "finished_at": _TIME,
                    },
                },
                "ExecutionList": {
                    "type": "object",
                    "required": ["executions"],
                    "additionalProperties": False,
                    "properties": {"executions": {"type": "array", "items": _ref("ExecutionSummary")}},
                },
                "EventRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "payload": {**_ANY, "description": "the event's payload (default null)"},
                        "key": {
                            "type": ["string", "null"],
                            "minLength": 1,
                            "maxLength": MAX_ID_LENGTH,
                            "description": "idempotency key: a repeated key is delivered once",
                        },
                    },
                },
                "EventDelivery": {
                    "type": "object",
                    "required": ["execution_id", "event", "delivered"],
                    "additionalProperties": False,
                    "properties": {
                        "execution_id": {"type": "string"},
                        "event": {"type": "string"},
                        "delivered": {
                            "type": "boolean",
                            "description": "false when this key was delivered before (nothing stored)",
                        },
                    },
                },
                "CancelRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"reason": {"type": "string", "maxLength": 1000}},
                },
                "Cancellation": {
                    "type": "object",
                    "required": ["id", "status", "cancelled"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "status": _ref("Status"),
                        "cancelled": {
                            "type": "boolean",
                            "description": "false when the execution had already ended",
                        },
                    },
                },
            },
        },
    }
