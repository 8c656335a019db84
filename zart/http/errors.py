"""Errors of the HTTP API: one shape, `{"error": {"code", "message"}}`, for every failure.

`api_error` maps the exceptions of `zart.client`, psycopg and Starlette to a status and a stable
code, so that an endpoint can simply raise; `endpoint` and `http_exception` turn them into responses.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psycopg
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import (
    DatabaseUnavailable,
    DuplicateExecution,
    ExecutionFinished,
    ExecutionNotFound,
    ExecutionNotResumable,
    SerializationError,
    StepNotInHistory,
    UnknownQueue,
    UnknownWorkflow,
)

log = logging.getLogger("zart.http")

# Sent with an error answered before the request's body was read: the connection cannot carry another
# request, so say so, or a client reusing it races the server's close ("server disconnected").
CLOSE = {"Connection": "close"}


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


# A 503 that says when to ask again: the condition (a locked row, a full server) is a passing one.
RETRY = {"Retry-After": "1"}


def busy(message: str) -> ApiError:
    return ApiError(503, "busy", message, RETRY)


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
    if isinstance(exc, UnknownQueue):
        return ApiError(422, "unknown_queue", str(exc))
    if isinstance(exc, DuplicateExecution):
        return ApiError(409, "duplicate_execution", str(exc))
    if isinstance(exc, ExecutionNotFound):
        return ApiError(404, "execution_not_found", str(exc))
    if isinstance(exc, ExecutionFinished):
        return ApiError(409, "execution_finished", str(exc))
    if isinstance(exc, ExecutionNotResumable):
        return ApiError(409, "execution_not_resumable", str(exc))
    if isinstance(exc, StepNotInHistory):
        return ApiError(404, "step_not_found", str(exc))
    if isinstance(exc, SerializationError):
        return invalid(str(exc))
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return ApiError(
            503,
            "timeout",
            "a row this request needs stayed locked past the server's --lock-timeout "
            "(a worker is busy with this execution); try again",
            RETRY,
        )
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ApiError(
            503,
            "timeout",
            "the database did not answer within the server's --statement-timeout; try again later",
            RETRY,
        )
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


def logged_error(exc: BaseException, request: Request) -> ApiError:
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
            return error_response(logged_error(exc, request))

    return wrapper


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler: routing errors (404, 405) and anything outside an endpoint."""
    return error_response(logged_error(exc, request))
