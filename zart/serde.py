"""Values in and out of PostgreSQL, through orjson.

Values are stored in `json` (not `jsonb`) columns on purpose: `jsonb` re-orders object keys, so a
workflow iterating over a dict would see one order on the first run and another on replay. Storing the
exact bytes orjson produced, and handing the workflow `orjson.loads` of those same bytes, makes the
first run and every replay see identical values. A value that would not come back as given (NaN, an
infinity, an integer beyond 64 bits: see `jsonvalues`) is refused rather than stored changed.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from .errors import SerializationError
from .jsonvalues import Unstorable, find_unstorable

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if isinstance(value, (set, frozenset)):
        raise TypeError
    raise TypeError


def dumps(value: Any, where: str) -> bytes:
    """Serialise `value`; `where` names the call site for the error ("input of workflow 'x'")."""
    try:
        data = orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        found = find_unstorable(value)
        if found is not None:
            raise _unstorable(found, where) from None
        culprit = _find_unserialisable(value)
        type_name = type(culprit).__qualname__ if culprit is not _NOTHING else type(value).__qualname__
        raise SerializationError(
            f"cannot serialise a value of type {type_name!r} passed as {where}: "
            f"Zart stores values as JSON (dict, list, str, int, float, bool, None, dataclasses, "
            f"attrs classes, datetime, UUID) ({exc})"
        ) from None
    # orjson writes NaN and the infinities as null: only then is the value walked, to find one.
    if b"null" in data:
        found = find_unstorable(value)
        if found is not None:
            raise _unstorable(found, where)
    return data


def _unstorable(found: Unstorable, where: str) -> SerializationError:
    at = f" (at {found.path})" if found.path else ""
    return SerializationError(f"cannot serialise {found.what} passed as {where}{at}: {found.why}")


def loads(data: bytes | str | None) -> Any:
    """Decode stored JSON (None stays None)."""
    if data is None:
        return None
    return orjson.loads(data)


def roundtrip(value: Any, where: str) -> tuple[bytes, Any]:
    """Serialise and decode again: the stored bytes and the value the workflow must see."""
    data = dumps(value, where)
    return data, orjson.loads(data)


_NOTHING = object()


def _find_unserialisable(value: Any, depth: int = 0) -> Any:
    """The innermost part of `value` that orjson refuses, for a precise error message."""
    if depth > 50:
        return _NOTHING
    try:
        orjson.dumps(value, default=_default, option=_OPTIONS)
        return _NOTHING
    except (orjson.JSONEncodeError, TypeError):
        pass
    children: list[Any] = []
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                return key
        children = list(value.values())
    elif isinstance(value, (list, tuple)):
        children = list(value)
    elif attrs.has(type(value)):
        children = list(attrs.asdict(value, recurse=False).values())
    elif hasattr(value, "__dataclass_fields__"):
        children = [getattr(value, name) for name in value.__dataclass_fields__]
    for child in children:
        found = _find_unserialisable(child, depth + 1)
        if found is not _NOTHING:
            return found
    return value


def safe_text(text: str) -> str:
    """`text` as PostgreSQL can store it in a `text` column, with nothing lost from sight.

    Error messages and tracebacks come from user code and may hold what PostgreSQL refuses: a NUL
    (`\\x00`), or a lone surrogate such as `os.fsdecode` makes of a file name in another encoding
    (psycopg cannot even encode it). Both are written as visible escapes (`\\x00`, `\\udce9`), so
    one execution's odd error text can never make the transaction that records it fail.
    """
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text
