"""`zart replay-check` keeps its speed: at least 500 histories of 10 steps a second, a safe floor on a
noisy 2-core machine for a check that runs about 11,000 a second there (docs/benchmarks.md)."""

from __future__ import annotations

from . import replay_check


def test_replay_check_checks_at_least_500_histories_a_second():
    result = replay_check.run(executions=2000, steps=10, command=False)
    assert result["histories_per_s"] >= 500, result
