"""The queues of bench/queue_overhead.py, declared where its supervisor imports them.

The workflow is bench/apps.py's (3 no-op steps by default input); each start names its queue, so
every variant runs the very same workflow and only the queue differs. Importing this module in the
workers registers the queues with their limits, as an application's module would.
"""

from __future__ import annotations

import zart

from .apps import bench_steps, noop  # noqa: F401 - registered for the workers

# Never binds: the workers hold at most 2 x 500 executions at once (--procs 2 --concurrency 500).
WIDE = zart.Queue("bench-wide", concurrency=1000)
# Binds: 10 executions in progress at once across both processes.
NARROW = zart.Queue("bench-narrow", concurrency=10)
# Binds per key: 2 executions in progress per key (the benchmark spreads them over 50 keys).
PER_KEY = zart.Queue("bench-per-key", per_key=2)
