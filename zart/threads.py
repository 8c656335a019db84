"""Blocking code called from async code, under trio or asyncio alike (whichever is running)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sniffio

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` in a worker thread of the running async library: the event loop
    never waits on PostgreSQL or on a threading primitive."""
    if sniffio.current_async_library() == "trio":
        import trio

        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)
