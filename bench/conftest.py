"""The micro-benchmarks use the tests' PostgreSQL fixtures and keep their JSON in bench/results/."""

from pathlib import Path

from tests.conftest import database_url, fresh_database_url, server_url  # noqa: F401 - fixtures

(Path(__file__).resolve().parent / "results").mkdir(exist_ok=True)
