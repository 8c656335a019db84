"""Structured log lines: one per lifecycle event, as `event=name key=value ...`.

Lifecycle events (worker started/stopped, draining, lease lost, database lost/reconnected) are logged
at INFO or WARNING; nothing is logged per step on the hot path.
"""

from __future__ import annotations

import logging
from typing import Any


def _format(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return repr(text) if (" " in text or not text) else text


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        details = " ".join(f"{key}={_format(value)}" for key, value in fields.items())
        logger.log(level, "event=%s %s", event, details)
