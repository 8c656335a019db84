"""Several supervisors on one database, at a small scale in CI (the figures: docs/benchmarks.md)."""

from __future__ import annotations

from . import herd


def test_four_supervisors_run_no_more_than_twice_the_claim_queries_per_notification_of_one():
    one = herd.claims_per_notification(supervisors=1, procs=2, starts=60, gap=0.01)
    four = herd.claims_per_notification(supervisors=4, procs=2, starts=60, gap=0.01)
    assert one["per_notification"] >= 1.0  # every start was claimed, and counted
    assert four["per_notification"] <= 2 * one["per_notification"], (one, four)


def test_four_supervisors_keep_the_throughput_of_one():
    """The acceptance figure is 0.9x (docs/benchmarks.md: 1.0-1.1x measured alone); under CI's
    parallel load the floor is lower, so that a neighbour's burst does not fail it."""
    one = herd.throughput(supervisors=1, procs=2, workflows=1500, steps=3)
    four = herd.throughput(supervisors=4, procs=2, workflows=1500, steps=3)
    assert four["workflows_per_s"] >= 0.6 * one["workflows_per_s"], (one, four)
