"""Rendering the dashboard's pages: the Jinja2 environment, its filters, and the HTML responses.

Autoescaping is on for every template, so whatever a workflow stored (input, result, error, event
payloads, ids, names) reaches the page as text, never as markup; the Content-Security-Policy sent
with every page allows only this dashboard's own script and style besides, as a second wall. A page
asked for by the dashboard's script (`X-Zart-Live: 1`) gets only its `live` block, which the script
swaps in place: live updates without reloading the page.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import markupsafe
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .timeline import seconds_text

LIVE_HEADER = "x-zart-live"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(moment: datetime | None) -> str:
    """A moment as the dashboard shows every time: UTC, to the millisecond."""
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def duration(seconds: float | None) -> str:
    return "—" if seconds is None else seconds_text(seconds, ".1f")


def between(begin: datetime | None, end: datetime | None) -> str:
    if begin is None or end is None:
        return "—"
    return duration((end - begin).total_seconds())


def as_json(value: Any) -> str:
    """A stored value, indented for reading (the template escapes it)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)


def badge(status: str) -> markupsafe.Markup:
    """A status as a coloured label (the status is escaped like any value)."""
    return markupsafe.Markup('<span class="status status-{0}">{0}</span>').format(status)


def execution_url(execution_id: str) -> str:
    return "/executions/" + quote(execution_id, safe="")


def _query(values: dict[str, Any]) -> str:
    return urlencode({name: value for name, value in values.items() if value not in (None, "")})


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("zart.http.dashboard", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(
    when=when, duration=duration, as_json=as_json, execution_url=execution_url, query=_query
)
ENVIRONMENT.globals.update(between=between, badge=badge)

STATIC = {
    name: (resources.files("zart.http.dashboard").joinpath("static", name).read_bytes(), media_type)
    for name, media_type in (
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
    )
}


def is_live(request: Request) -> bool:
    return request.headers.get(LIVE_HEADER) == "1"


def page(request: Request, template: str, http_status: int = 200, **values: Any) -> Response:
    """The page `template` (or its `live` block for the dashboard's script), with the session's CSRF
    token for its forms and the time taken in a `Server-Timing` header."""
    cookie = request.scope.get("state", {}).get("zart_session")
    values.setdefault("csrf", "" if cookie is None else request.app.state.signer.csrf(cookie))
    values.setdefault("token_set", request.app.state.settings.token is not None)
    values.setdefault("path", request.url.path)
    loaded = ENVIRONMENT.get_template(template)
    if is_live(request) and "live" in loaded.blocks:
        html = "".join(loaded.blocks["live"](loaded.new_context(values)))
    else:
        html = loaded.render(values)
    return html_response(request, html, http_status)


def html_response(
    request: Request, html: str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    began = request.scope.get("state", {}).get("zart_began")
    timing = {} if began is None else {"Server-Timing": f"app;dur={(time.perf_counter() - began) * 1000:.1f}"}
    return HTMLResponse(html, status, {**SECURITY_HEADERS, **timing, **(headers or {})})


def static(request: Request) -> Response:
    found = STATIC.get(request.path_params["name"])
    if found is None:
        return error_page(request, 404, "no such file")
    body, media_type = found
    headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=media_type, headers=headers)


def error_page(request: Request, status: int, message: str) -> Response:
    return page(request, "error.html", status, status=status, message=message)
