"""The HTTP API (`zart serve`): Starlette on uvicorn (httptools, asyncio).

Bodies are JSON through orjson, both ways. Every error is `{"error": {"code", "message"}}`: 400, 401,
404, 405, 409, 413 or 422 for a bad request, 503 when PostgreSQL does not answer; a 500 is a bug.
Paths are matched on the raw (still percent-encoded) path and each segment is decoded on its own,
so an execution id or an event name may contain `/` (sent as `%2F`).

One job per module:

- `errors`: `ApiError`, the error responses, exceptions mapped to status and code
- `validation`: body size, content type, JSON objects, ids and names, query parameters
- `middleware`: bearer-token authentication, routing on the raw path
- `app`: the endpoints and `create_app`
- `openapi`: the OpenAPI document
- `server`: `serve()`, uvicorn, the socket, worker processes, signals, settings from the environment
"""

from __future__ import annotations

from .app import DEFAULT_MAX_BODY_SIZE, Settings, create_app
from .errors import ApiError, api_error
from .openapi import openapi_document
from .server import TOKEN_ENV, parse_size, serve

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "TOKEN_ENV",
    "ApiError",
    "Settings",
    "api_error",
    "create_app",
    "openapi_document",
    "parse_size",
    "serve",
]
