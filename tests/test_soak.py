"""The soak (issue 19, bench/soak.py): workflows using steps, retries, sleeps, events, zart.parallel,
zart.map and child workflows, under two `zart supervise` on a primary with a synchronous standby,
while a chaos driver SIGKILLs a random worker every 1-3 s, SIGSTOPs one past its lease and resumes
it, restarts PostgreSQL once and fails over once: 0 lost, 0 stuck, 0 duplicate checkpoints, only
in-flight steps re-run. CI runs 1,000 workflows; `pytest -m soak` runs the full 10,000.
"""

from __future__ import annotations

import pytest

from bench import soak

from . import pgcluster


def run_and_check(workflows: int) -> None:
    reason = pgcluster.skip_reason()
    if reason:
        pytest.skip(reason)
    summary = soak.run_soak(workflows)
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    assert soak.check(summary) == []
    # The chaos reached executions in flight: the workers lost some (the SIGSTOPped one's leases,
    # the SIGKILLed ones' attempts), and everything was still done once.
    assert summary["kills"] >= 5
    assert summary["lease_lost_by_the_stopped_worker"] >= 1
    assert summary["attempts"].get("abandoned", 0) >= 1


def test_soak_1000_workflows_under_chaos():
    run_and_check(1000)


@pytest.mark.soak
@pytest.mark.timeout(1200)
def test_soak_10000_workflows_under_chaos():
    run_and_check(10_000)
