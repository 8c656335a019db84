"""Who may see the dashboard, and which requests may act: the session gate, login and logout.

The API keeps its bearer token (`middleware.BearerAuth` guards `/v1/...`, `/metrics` and
`/openapi.json`); every other path is the dashboard's, guarded here by the session cookie of
`session.Signer`. A page asked for without a session redirects to the login form; any other request
without one is refused with 401. Actions check the CSRF token and the `Origin` in `read_form`.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request, cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ApiError
from ..middleware import is_api_path
from ..validation import read_body
from .render import error_page, html_response, page
from .session import COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_SECONDS, Signer, token_matches

log = logging.getLogger("zart.http")

OPEN_PATHS = ("/login",)
MAX_FORM_BYTES = 1024 * 1024  # an event's payload, typed in a form, fits
FORM_TYPE = "application/x-www-form-urlencoded"


def _cookie_header(value: str, scope: Scope, max_age: int = SESSION_SECONDS) -> bytes:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    return f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}".encode()


def session_cookie(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            found = cookie_parser(value.decode("latin-1")).get(COOKIE)
            if found:
                return found
    return None


class DashboardGate:
    """Lets a request through to a dashboard page only with a valid session (see module doc)."""

    def __init__(self, app: ASGIApp, signer: Signer, token_set: bool) -> None:
        self.app = app
        self.signer = signer
        self.token_set = token_set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or is_api_path(path):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["zart_began"] = time.perf_counter()
        cookie = session_cookie(scope)
        if cookie is not None and self.signer.valid(cookie):
            state["zart_session"] = cookie
            await self.app(scope, receive, send)
            return
        if path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        if not self.token_set and scope["method"] in ("GET", "HEAD"):
            # No token to log in with: this browser's session begins at its first page.
            await self._with_new_session(scope, receive, send)
            return
        request = Request(scope, receive)
        if scope["method"] in ("GET", "HEAD"):
            target = path + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            response: Response = RedirectResponse("/login?next=" + quote(target, safe=""), 303)
        else:
            response = error_page(request, 401, "Log in first: this action needs a session of the dashboard.")
            response.headers["Connection"] = "close"  # its body was not read
        await response(scope, receive, send)

    async def _with_new_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        cookie = self.signer.issue()
        scope["state"]["zart_session"] = cookie

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (b"set-cookie", _cookie_header(cookie, scope))],
                }
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (no `//host`, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(char) < 32 for char in target):
        return "/"
    return target


async def read_form(request: Request, *, csrf: bool = True) -> dict[str, str]:
    """The urlencoded body of a dashboard form, its CSRF token and origin checked (ApiError if not)."""
    origin = request.headers.get("origin")
    # The host only: behind a proxy that ends TLS the page is https and this server sees http.
    if csrf and origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise ApiError(403, "forbidden", f"this action came from another site ({origin})")
    body = await read_body(request, MAX_FORM_BYTES)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and media_type != FORM_TYPE:
        raise ApiError(400, "unsupported_content_type", f"a dashboard form is sent as {FORM_TYPE}")
    try:
        text = body.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=50, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_request", f"the form could not be read: {exc}") from None
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:
        raise ApiError(400, "bad_request", f"the form field {repeated[0]!r} is repeated")
    form = {name: values[0] for name, values in parsed.items()}
    if csrf:
        cookie = request.scope["state"].get("zart_session")
        presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if cookie is None or not request.app.state.signer.csrf_valid(cookie, presented):
            raise ApiError(
                403, "csrf", "this form's CSRF token is missing or stale: reload the page and try again"
            )
    return form


async def login_form(request: Request) -> Response:
    if request.app.state.settings.token is None:
        return RedirectResponse("/", 303)
    return page(request, "login.html", next=safe_next(request.query_params.get("next")), failed=False)


async def login(request: Request) -> Response:
    token = request.app.state.settings.token
    if token is None:
        return RedirectResponse("/", 303)
    try:
        form = await read_form(request, csrf=False)
    except ApiError as exc:
        return error_page(request, exc.status, exc.message)
    target = safe_next(form.get("next"))
    if not token_matches(token, form.get("token", "")):
        log.warning("dashboard login refused from %s", request.client.host if request.client else "?")
        return page(request, "login.html", 401, next=target, failed=True)
    cookie = request.app.state.signer.issue()
    return html_response(
        request, "", 303, {"Location": target, "Set-Cookie": _cookie_header(cookie, request.scope).decode()}
    )


async def logout(request: Request) -> Response:
    try:
        await read_form(request)
    except ApiError as exc:
        return error_page(request, exc.status, exc.message)
    return html_response(
        request, "", 303, {"Location": "/login", "Set-Cookie": _cookie_header("", request.scope, 0).decode()}
    )
