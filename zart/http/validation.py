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
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from .. import queues, starting
from ..durations import MAX_SECONDS
from ..jsonvalues import find_unstorable
from ..names import name_problem
from .errors import CLOSE, ApiError, invalid

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
MAX_ID_LENGTH = starting.MAX_ID_LENGTH
MAX_WORKFLOW_NAME_LENGTH = 200  # as zart.workflow() allows
MAX_QUEUE_NAME_LENGTH = queues.MAX_QUEUE_NAME_LENGTH
MAX_KEY_LENGTH = queues.MAX_KEY_LENGTH
# Priorities live in a Postgres `integer`, as zart.start checks them.
MAX_PRIORITY = 2**31 - 1
# Most executions one batch start may create: one statement and one transaction hold them all, so
# the bound keeps a request's time and locks short (and the client splits a larger batch).
MAX_BATCH = 10_000
START_OPTIONS = ("queue", "key", "priority", "delay", "run_at")


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


def _shown(value: Any) -> str:
    """A value as JSON for an error message: a scalar as sent, a container by its type only."""
    if isinstance(value, (list, dict)):
        return _json_type(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:79] + "…"


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


async def read_body(request: Request, limit: int) -> bytes:
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
    body = await read_body(request, request.app.state.settings.max_body_size)
    if not body and not required:
        return {}
    if not required:
        _check_content_type(request)
    value = _decode(body)
    expected = ", ".join(repr(field) for field in fields) or "none"
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


def start_options(body: dict[str, Any]) -> dict[str, Any]:
    """The start options of a body (`queue`, `key`, `priority`, `delay`, `run_at`), checked by the
    rules `zart.start` applies, as keyword arguments for it; an error names the field."""
    options: dict[str, Any] = {}
    if body.get("queue") is not None:
        options["queue"] = check_name(body["queue"], "field 'queue'", MAX_QUEUE_NAME_LENGTH)
    if body.get("key") is not None:
        options["key"] = check_name(body["key"], "field 'key'", MAX_KEY_LENGTH)
    priority = body.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
            raise invalid(
                f"field 'priority' must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY} "
                f"(lower begins first; default 0), not {_shown(priority)}"
            )
        options["priority"] = priority
    delay, run_at = body.get("delay"), body.get("run_at")
    if delay is not None and run_at is not None:
        raise invalid("give field 'delay' or field 'run_at', not both")
    if delay is not None:
        options["delay"] = _delay(delay)
    if run_at is not None:
        options["run_at"] = _moment(run_at)
    return options


def _delay(value: Any) -> float:
    """A duration ("10s", "5m", "1.5h") or a number of seconds, zero to 100 years."""
    problem = (
        f'field \'delay\' must be a duration such as "10s", "5m" or "1h" (units ms, s, m, h, d), '
        f"or a number of seconds; zero (now) to 100 years ({MAX_SECONDS:.0f} s), "
        f"not {_shown(value)}"
    )
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise invalid(problem)
    try:
        return queues.parse_delay(value, "field 'delay'")
    except ValueError:
        raise invalid(problem) from None


def _moment(value: Any) -> datetime:
    """An ISO 8601 date and time with its UTC offset: "2026-05-01T12:00:00Z", "...+02:00"."""
    example = 'such as "2026-05-01T12:00:00Z" or "2026-05-01T14:00:00+02:00"'
    if not isinstance(value, str):
        raise invalid(f"field 'run_at' must be an ISO 8601 date and time {example}, not {_json_type(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(f"field 'run_at' must be an ISO 8601 date and time {example}, not {value!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise invalid(f"field 'run_at' {value!r} has no UTC offset: add one, {example}")
    return moment


def batch_lists(body: dict[str, Any]) -> tuple[list[Any], list[str] | None]:
    """The `inputs` of a batch start and its `ids` (one per input, none twice), checked."""
    if "inputs" not in body:
        raise invalid("missing field 'inputs' (a list of workflow inputs, one per execution)")
    inputs = body["inputs"]
    if not isinstance(inputs, list):
        raise invalid(f"field 'inputs' must be an array (one input per execution), not {_json_type(inputs)}")
    if len(inputs) > MAX_BATCH:
        raise invalid(
            f"field 'inputs' holds {len(inputs)} inputs: a batch starts at most {MAX_BATCH}; "
            "split it into several requests"
        )
    ids = body.get("ids")
    if ids is None:
        return inputs, None
    if not isinstance(ids, list):
        raise invalid(f"field 'ids' must be an array of execution ids, not {_json_type(ids)}")
    if len(ids) != len(inputs):
        raise invalid(
            f"field 'ids' gives {len(ids)} id(s) for {len(inputs)} input(s): give one id per input, or none"
        )
    seen: set[str] = set()
    for index, execution_id in enumerate(ids):
        check_name(execution_id, f"field 'ids' [{index}]")
        if execution_id in seen:
            raise invalid(f"field 'ids' holds the id {execution_id!r} twice")
        seen.add(execution_id)
    return inputs, ids
