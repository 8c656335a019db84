"""The dashboard's actions on one execution: cancel, send an event, resume, fork, pause, unpause.

Each is a POST of a form carrying the session's CSRF token (checked by `auth.read_form`), behind a
confirmation in the page. The same client functions as the API's endpoints do the work, on a thread
of the write lane. The page's script sends the form with `fetch` and gets JSON back (`message`, and
`location` when the action made a new execution), then refreshes the page's live part: the page is
not reloaded. Without the script, the answer is a redirect back to the execution's page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ... import client, operating
from ...jsonvalues import find_unstorable
from ..errors import ApiError, logged_error
from ..lanes import in_thread
from ..validation import check_name, optional_name, segment
from .auth import read_form
from .pages import failed_page
from .render import execution_url, is_live

MAX_REASON_LENGTH = 1000

Action = Callable[[str, dict[str, str]], Callable[[str], tuple[str, str | None]]]


def _payload(text: str) -> Any:
    """An event's payload typed in the page: JSON text, empty for none."""
    if not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_request", f"the payload is not valid JSON: {exc}") from None
    found = find_unstorable(value, "payload")
    if found is not None:
        raise ApiError(400, "invalid_request", f"the payload holds {found.what}: {found.why}")
    return value


def _cancel(execution_id: str, form: dict[str, str]) -> Callable[[str], tuple[str, str | None]]:
    reason = form.get("reason", "").strip() or "cancelled from the dashboard"
    if len(reason) > MAX_REASON_LENGTH:
        raise ApiError(400, "invalid_request", f"the reason is longer than {MAX_REASON_LENGTH} characters")

    def run(url: str) -> tuple[str, str | None]:
        if client.cancel(execution_id, reason=reason, database_url=url):
            return "Cancelled.", None
        return "It had already ended: nothing to cancel.", None

    return run


def _event(execution_id: str, form: dict[str, str]) -> Callable[[str], tuple[str, str | None]]:
    name = check_name(form.get("name", "").strip(), "the event name")
    payload = _payload(form.get("payload", ""))
    key = optional_name({"key": form.get("key", "").strip() or None}, "key", "the idempotency key")

    def run(url: str) -> tuple[str, str | None]:
        delivered = client.send_event(execution_id, name, payload, key=key, database_url=url)
        return (
            f"Event {name!r} sent." if delivered else f"Event {name!r} was sent before with this key."
        ), None

    return run


def _resume(execution_id: str, form: dict[str, str]) -> Callable[[str], tuple[str, str | None]]:
    def run(url: str) -> tuple[str, str | None]:
        operating.resume(execution_id, database_url=url)
        return "Resumed from its first unfinished step.", None

    return run


def _fork(execution_id: str, form: dict[str, str]) -> Callable[[str], tuple[str, str | None]]:
    text = form.get("from_step", "").strip()
    from_step: str | int = (
        int(text) if text.isascii() and text.isdigit() else check_name(text, "the step to fork from")
    )

    def run(url: str) -> tuple[str, str | None]:
        handle = operating.fork(execution_id, from_step=from_step, database_url=url)
        return f"Forked as {handle.id}.", execution_url(handle.id)

    return run


def _pausing(paused: bool) -> Action:
    def action(execution_id: str, form: dict[str, str]) -> Callable[[str], tuple[str, str | None]]:
        def run(url: str) -> tuple[str, str | None]:
            changed = (operating.pause if paused else operating.unpause)(execution_id, database_url=url)
            if paused:
                return ("Paused." if changed else "It was paused already."), None
            return ("Unpaused." if changed else "It was not paused."), None

        return run

    return action


ACTIONS: dict[str, Action] = {
    "cancel": _cancel,
    "event": _event,
    "resume": _resume,
    "fork": _fork,
    "pause": _pausing(True),
    "unpause": _pausing(False),
}


def endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
    action = ACTIONS[name]

    async def act(request: Request) -> Response:
        try:
            execution_id = segment(request, "id", "execution id")
            form = await read_form(request)
            message, location = await in_thread(request, "write", action(execution_id, form))
        except Exception as exc:
            if is_live(request):
                error = logged_error(exc, request)
                return JSONResponse({"error": {"code": error.code, "message": error.message}}, error.status)
            return await failed_page(request, exc)
        target = location or execution_url(execution_id)
        if is_live(request):
            return JSONResponse({"message": message, "location": location})
        return RedirectResponse(f"{target}?done={name}", 303)

    act.__name__ = f"{name}_execution"
    return act
