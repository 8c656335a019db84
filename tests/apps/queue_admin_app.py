"""Workflows in queues that operators change at run time (tests/test_queue_admin.py).

`qa-gate` waits for the event `qa-go` and returns its input: an execution of it stays in progress
(holding its queue slot) until the test lets it go, so that the test can count what runs at once.
"""

from __future__ import annotations

import zart

# One at a time, as declared in code; the test raises it with `zart queues set`.
single = zart.Queue("qa-single", concurrency=1)
# Declared with limits a worker registers, for the override and reset test.
declared = zart.Queue("qa-declared", concurrency=1, rate="5/1s")
# Backlogs that no worker runs: counted by `zart queues` and started into over HTTP.
counted = zart.Queue("qa-counted", concurrency=2)
http_queue = zart.Queue("qa-http", per_key=1)


@zart.workflow("qa-gate", queue=single)
async def gate(tag: object = None) -> object:
    await zart.wait_for_event("qa-go")
    return tag
