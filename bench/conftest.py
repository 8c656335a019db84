"""The micro-benchmarks use the tests' PostgreSQL fixtures and keep their JSON in bench/results/."""

from pathlib import Path

from tests.conftest import (  # noqa: F401 - fixtures
    database_url,
    fresh_database_url,
    migrated_template,
    server_url,
)

(Path(__file__).resolve().parent / "results").mkdir(exist_ok=True)
