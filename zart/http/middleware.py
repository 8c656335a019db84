"""ASGI middleware of the API: a deadline for request bodies, bearer-token authentication, and
routing on the raw path."""

from __future__ import annotations

import hmac
import re

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import CLOSE, ApiError, error_response


class BodyDeadline:
    """A request's body must have arrived `seconds` after its headers did, or the answer is 408.

    The server bounds the wait for a request's headers (`protocol.HttpProtocol`) but not for its body:
    a client trickling one byte at a time would hold its connection, and the task reading it,
    forever. Every `receive` of the body is bounded by the one deadline; the 408 carries
    `Connection: close`, so the connection ends with it.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        complete = False

        async def receive_by_deadline() -> Message:
            nonlocal complete
            if complete:  # after the body: a wait for the client to disconnect, not bounded here
                return await receive()
            with anyio.CancelScope(deadline=deadline):
                message = await receive()
                complete = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            raise ApiError(
                408,
                "body_timeout",
                f"the request body did not arrive within {self.seconds:g} s of its headers",
                CLOSE,
            )

        await self.app(scope, receive_by_deadline, send)


API_PATHS = ("/metrics", "/openapi.json", "/healthz")


_VERSIONED = re.compile(r"/v[0-9]+(?:/|$)")


def is_api_path(path: str) -> bool:
    """The API's paths (`/v1/...`, any `/vN/...` to come, and API_PATHS); every other path belongs
    to the dashboard (zart.http.dashboard)."""
    return path in API_PATHS or _VERSIONED.match(path) is not None


class BearerAuth:
    """With a token set, every request of the API but `GET /healthz` must carry `Authorization: Bearer
    TOKEN`. The dashboard's pages have their own session cookie (`dashboard.auth.DashboardGate`).

    The token is compared with `hmac.compare_digest`, in time independent of where it differs. The
    request's body is not read before a 401, hence `Connection: close` (see `errors.CLOSE`).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if self.expected is None or scope["type"] != "http" or path == "/healthz" or not is_api_path(path):
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        if not values:
            error = ApiError(
                401,
                "unauthorized",
                "this API needs an 'Authorization: Bearer TOKEN' header",
                {"WWW-Authenticate": "Bearer", **CLOSE},
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
                {"WWW-Authenticate": 'Bearer error="invalid_token"', **CLOSE},
            )
        await error_response(error)(scope, receive, send)


class RawPath:
    """Route on the raw path: `%2F` inside a segment stays part of that segment (see `validation.segment`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            scope = dict(scope, path=raw.decode("latin-1"))
        await self.app(scope, receive, send)
