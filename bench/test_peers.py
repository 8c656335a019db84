"""bench/peers.py runs at a tiny scale on both engines, so that CI notices when it breaks.

It asserts only that each engine ran every workflow to the right result (the benchmark checks each
one); the figures of a run this small say nothing, docs/benchmarks.md has those. DBOS is the
optional `peers` extra: without it (CI installs `.[dev]` only) the DBOS cases are skipped.
"""

from __future__ import annotations

import pytest

from . import peers

WORKFLOWS = 50


@pytest.mark.parametrize("case", peers.ZART_CASES)
def test_zart_runs_every_workflow_to_its_result(case):
    row = peers.run_zart(case, WORKFLOWS, procs=2, concurrency=500, batch=200)
    assert row["right_results"] == WORKFLOWS and row["workflows_per_s"] > 0, row


@pytest.mark.skipif(not peers.dbos_installed(), reason="dbos is not installed (pip install -e '.[peers]')")
@pytest.mark.parametrize("case", peers.DBOS_CASES)
def test_dbos_runs_every_workflow_to_its_result(case):
    row = peers.run_dbos(case, WORKFLOWS, procs=2)
    assert row["right_results"] == WORKFLOWS and row["workflows_per_s"] > 0, row
    # Every workflow ran in one of the DBOS worker processes (as recorded by DBOS).
    assert sum(int(n) for n in row["per_process"].split("/")) == WORKFLOWS, row
