"""The buggy version: the third step of `repair-five` always fails (after its retries)."""

from __future__ import annotations

import zart

from .core_app import record_effect
from .repair_common import register


@zart.step("repair-c", retry="fixed(2, 50ms)")
def repair_c(n: int) -> int:
    record_effect(n)
    raise ZeroDivisionError("the bug: divided by the wrong count")


register(repair_c)
