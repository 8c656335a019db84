"""The benchmarks of issue 14 run at a tiny scale, so that CI notices when one breaks.

They assert what a noisy 2-core machine keeps: every case ran and left what it should (the scripts
count it themselves), and the one ratio with a wide margin; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

from . import apps, branches, http_starts


def test_every_http_start_is_answered_201_and_stored():
    result = http_starts.run(clients=8, starts=200)  # run() checks 201s and rows
    assert result["starts"] == 200 and result["starts_per_s"] > 0, result


def test_branch_steps_cost_no_more_than_three_times_an_inline_step():
    # Inline branches are about 1.1-1.4x an inline step at full scale (docs/benchmarks.md); as
    # tasks they were 3-4x. At this scale and on a shared machine, only a wide margin holds.
    inline = branches.run_case("inline steps", apps.bench_steps, "32", workflows=300, steps=8, procs=2)
    mapped = branches.run_case("zart.map", apps.bench_map, "32", workflows=300, steps=8, procs=2)
    assert inline["steps_per_s"] / mapped["steps_per_s"] < 3.0, (inline, mapped)
