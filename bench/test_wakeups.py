"""The wake-up benchmark runs at a tiny scale, so that CI notices when it breaks (its figures at this
scale say nothing: docs/benchmarks.md has those)."""

from __future__ import annotations

from . import wakeups


def test_every_sleeper_wakes_and_is_measured():
    result = wakeups.run(sleepers=20, busy=40, seconds=0.3, procs=2)
    assert result["sleepers"] == 20
    assert 0 <= result["late_median_ms"] <= result["late_p99_ms"] <= result["late_max_ms"]
