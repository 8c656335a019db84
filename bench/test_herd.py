"""Several supervisors on one database, at a small scale in CI (the figures: docs/benchmarks.md)."""

from __future__ import annotations

from . import herd


def test_four_supervisors_run_no_more_than_twice_the_claim_queries_per_notification_of_one():
    one = herd.claims_per_notification(supervisors=1, procs=2, starts=60, gap=0.01)
    four = herd.claims_per_notification(supervisors=4, procs=2, starts=60, gap=0.01)
    assert one["per_notification"] >= 1.0  # every start was claimed, and counted
    assert four["per_notification"] <= 2 * one["per_notification"], (one, four)


def test_four_supervisors_keep_the_throughput_of_one():
    """The acceptance figure is 0.9x (docs/benchmarks.md: 1.0-1.1x measured alone). Under CI the
    other test process loads the same two cores at random moments, and a run here lasts half a
    second: each side takes the best of two runs, taken in turn, and the floor is lower."""
    best = {1: 0, 4: 0}
    for _ in range(2):
        for supervisors in best:
            rate = herd.throughput(supervisors=supervisors, procs=2, workflows=1500, steps=3)
            best[supervisors] = max(best[supervisors], rate["workflows_per_s"])
    assert best[4] >= 0.6 * best[1], best
