"""The pytest plugin of zart.testing (entry point `pytest11`): the `zart_env` fixture.

Each test that asks for `zart_env` gets a database of its own (created on the server of
`--zart-database-url`, $ZART_TEST_DATABASE_URL, $ZART_DATABASE_URL or the embedded one, dropped
afterwards) and a worker in the test's process, so tests in parallel (pytest-xdist) never see each
other's executions. Zart itself is imported only by a test that uses the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from . import WorkflowEnv


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--zart-database-url",
        default=None,
        help="PostgreSQL server on which zart_env makes each test's database "
        "(default: $ZART_TEST_DATABASE_URL, $ZART_DATABASE_URL, or the embedded server)",
    )


@pytest.fixture
def zart_env(request: pytest.FixtureRequest) -> Iterator[WorkflowEnv]:
    """A fresh Zart database with a worker and a clock this test moves (zart.testing.WorkflowEnv)."""
    from . import workflow_env

    with workflow_env(database_url=request.config.getoption("zart_database_url")) as env:
        yield env
