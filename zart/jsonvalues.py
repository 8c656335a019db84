"""The one rule for the values Zart stores as JSON, shared by `serde` and the HTTP API's bodies.

A value must come back from PostgreSQL as it was given, or a workflow would see another value than
its caller sent. Two kinds of number would not: orjson writes NaN and the infinities as `null`, and
reads an integer beyond 64 bits as a float (and refuses to write one). Both are refused, with the
place they were found. Text that comes from outside (`text=True`, an HTTP body) may hold neither a
NUL, which PostgreSQL cannot store in text (and `->>` of stored JSON would fail on), nor a lone
surrogate, which is not Unicode.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Any

import attrs

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1  # orjson's range: signed and unsigned 64-bit integers
MAX_DEPTH = 1024  # deeper than anything orjson reads or writes: a cycle ends the walk here

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@attrs.frozen
class Unstorable:
    """A part of a value Zart refuses: where it is, what it is, and whether it is a text problem."""

    path: str  # "input.items[2].price", or the root's name for the value itself
    what: str  # "NaN", "an integer beyond 64 bits", "a NUL character (U+0000)"...
    why: str  # what a person can do about it
    unicode: bool = False  # a lone surrogate: the text is not Unicode at all


def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _NAME.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _children(value: Any) -> list[tuple[Any, Any]] | None:
    """(key, child) pairs of a container, None for a leaf (the types `serde` writes as containers)."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if attrs.has(type(value)):
        return list(attrs.asdict(value, recurse=False).items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(field.name, getattr(value, field.name)) for field in dataclasses.fields(value)]
    return None


def _text_problem(text: str, path: str) -> Unstorable | None:
    if "\x00" in text:
        return Unstorable(path, "a NUL character (U+0000)", "PostgreSQL cannot store it in text; remove it")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return Unstorable(
            path,
            f"a lone surrogate (U+{ord(text[exc.start]):04X})",
            "it is not Unicode; send text as UTF-8",
            unicode=True,
        )
    return None


def _leaf_problem(value: Any, path: str, text: bool) -> Unstorable | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return None
        return Unstorable(
            path,
            f"an integer beyond 64 bits ({len(str(abs(value)))} digits)",
            "JSON numbers are stored as 64-bit integers or doubles; pass it as a string",
        )
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        shown = "NaN" if math.isnan(value) else ("infinity" if value > 0 else "-infinity")
        return Unstorable(path, shown, "JSON has no NaN or infinity (it would be stored as null)")
    if text and isinstance(value, str):
        return _text_problem(value, path)
    return None


def find_unstorable(value: Any, root: str = "", *, text: bool = False) -> Unstorable | None:
    """The first part of `value`, in document order, that Zart would not store as given; None if none.

    Iterative, so that a deeply nested value cannot exhaust the stack of the thread or task checking it.
    """
    stack: list[tuple[str, Any, int]] = [(root, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, enum.Enum):
            item = item.value  # orjson writes an enum as its value
        elif hasattr(item, "dtype") and hasattr(item, "tolist"):
            item = item.tolist()  # numpy arrays and scalars, written by OPT_SERIALIZE_NUMPY
        children = _children(item)
        if children is None:
            found = _leaf_problem(item, path, text)
            if found is not None:
                return found
            continue
        if depth >= MAX_DEPTH:
            continue
        if text and isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and (found := _text_problem(key, _child_path(path, key))):
                    return attrs.evolve(found, what=f"a key holding {found.what}")
        stack.extend((_child_path(path, key), child, depth + 1) for key, child in reversed(children))
    return None
