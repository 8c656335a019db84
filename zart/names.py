"""The one rule for text that becomes a key: execution ids, event names and keys, sleep names.

Such text ends up in `text` columns and in checkpoint keys (`event:NAME#k`), so it must be storable
(valid UTF-8, no NUL) and readable in a log or a terminal (no control characters). The client, the
workflow calls and the HTTP API all check it here, each raising its own kind of error.
"""

from __future__ import annotations

from typing import Any


def name_problem(value: str, what: str, max_length: int) -> str | None:
    """What is wrong with the string `value` as a name (`what` names it in the message), or None."""
    if not value or len(value) > max_length:
        return f"{what} must be 1 to {max_length} characters long, not {len(value)}"
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8"
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        return f"{what} {value!r} contains control characters"
    return None


def check_name(value: Any, what: str, max_length: int) -> str:
    """`value` if it is a good name; TypeError if it is no string, ValueError naming the problem."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    problem = name_problem(value, what, max_length)
    if problem is not None:
        raise ValueError(problem)
    return value
