"""Checking a request before anything touches the database: body size, content type, JSON, names.

Every check raises an `ApiError` that says what was wrong, so that a client learns it from the
first 4xx rather than from a 500 or a half-done operation.

Bodies are decoded by the standard library's `json` rather than orjson, which reads an integer beyond
64 bits as a float and cannot say which field holds a lone surrogate: every value then goes through
`jsonvalues.find_unstorable`, the rule `serde` applies too, so that a field Zart would not store as
sent is refused with its name.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from .. import starting
from ..jsonvalues import find_unstorable
from ..names import name_problem
from .errors import CLOSE, ApiError, invalid

STATUSES = ("pending", "running", "sleeping", "waiting", "completed", "failed", "timed_out", "cancelled")
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
MAX_ID_LENGTH = starting.MAX_ID_LENGTH
MAX_WORKFLOW_NAME_LENGTH = 200  # as zart.workflow() allows


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
    problem = name_problem(value, what, max_length)
    if problem is not None:
        raise invalid(problem)
    return value


def segment(request: Request, name: str, what: str) -> str:
    """A path parameter, percent-decoded, checked like an execution id (see `middleware.RawPath`)."""
    return check_name(unquote(request.path_params[name], errors="surrogateescape"), what)


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
    too_large = ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes", CLOSE)
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
            exc.headers = {**(exc.headers or {}), **CLOSE}
            raise
    body = await _read_body(request, request.app.state.settings.max_body_size)
    if not body and not required:
        return {}
    if not required:
        _check_content_type(request)
    value = _decode(body)
    expected = ", ".join(repr(field) for field in fields)
    if not isinstance(value, dict):
        raise invalid(f"the body must be a JSON object with the fields {expected}, not {_json_type(value)}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r} (the fields are {expected})")
    for field in fields:
        if field in value and (found := find_unstorable(value[field], field, text=True)):
            at = "" if found.path == field else f" at {found.path}"
            message = f"field {field!r} holds {found.what}{at}: {found.why}"
            if found.unicode:
                raise ApiError(400, "invalid_json", f"the body is not valid JSON text: {message}")
            raise invalid(message)
    return value


class _NotJson(ValueError):
    """`NaN`, `Infinity` or `-Infinity`: the standard library reads them, JSON has none of them."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _decode(body: bytes) -> Any:
    """The body's JSON value: strict UTF-8 without a byte order mark, no NaN, at most ~1000 levels deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"it is not UTF-8 ({exc.reason} at byte {exc.start})"
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {reason}") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, _NotJson) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON: it is nested too deeply") from None


def optional_name(body: dict[str, Any], field: str, what: str) -> str | None:
    value = body.get(field)
    return None if value is None else check_name(value, what)


def query_value(request: Request, name: str) -> str | None:
    """A query parameter given at most once; None when absent or empty."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(f"query parameter {name!r} is given {len(values)} times")
    return values[0] if values and values[0] != "" else None
