"""The CLI's happy paths against a real worker, migrations, and the embedded default."""

from __future__ import annotations

import concurrent.futures
import gc
import subprocess
import sys
import uuid

import orjson
import psycopg
import pytest

import zart
from zart.schema import available_migrations, migrate

from .apps import core_app
from .helpers import REPO_ROOT, SupervisorProcess, WorkerProcess, run_cli, scalar


def test_cli_start_wait_status_and_migrate(database_url, subprocess_env):
    assert run_cli("migrate", env=subprocess_env).stdout.strip() == "schema is up to date"
    worker = WorkerProcess(subprocess_env)
    try:
        worker.wait_started()
        execution_id = f"cli-{uuid.uuid4()}"
        started = run_cli(
            "start",
            "three-steps",
            "--input",
            '{"n": 5}',
            "--id",
            execution_id,
            "--wait",
            "--timeout",
            "30",
            env=subprocess_env,
        )
        assert started.returncode == 0, started.stderr
        assert orjson.loads(started.stdout) == {
            "value": 12,
            "context": f"{execution_id}/describe#1",
        }
        status = run_cli("status", execution_id, env=subprocess_env)
        assert status.returncode == 0
        assert status.stdout.splitlines()[0] == "completed"
        as_json = orjson.loads(run_cli("status", execution_id, "--json", env=subprocess_env).stdout)
        assert (as_json["id"], as_json["workflow"], as_json["status"]) == (
            execution_id,
            "three-steps",
            "completed",
        )
        # Starting the same id again prints the same id and runs nothing again.
        again = run_cli(
            "start", "three-steps", "--input", '{"n": 5}', "--id", execution_id, env=subprocess_env
        )
        assert again.stdout.strip() == execution_id
    finally:
        assert worker.stop() == 0


def test_migrate_is_idempotent_and_safe_concurrently(fresh_database_url):
    # The fixture migrated once; run it again from 4 threads at once.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(migrate, [fresh_database_url] * 4))
    assert results == [[], [], [], []]
    versions = [m.version for m in available_migrations()]
    with psycopg.connect(fresh_database_url) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM zart_schema_migrations ORDER BY 1")]
    assert applied == versions


def test_concurrent_first_migrations_on_an_empty_database(server_url):
    from .conftest import _create_database, _drop_database

    name, url = _create_database(server_url)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(migrate, [url] * 3))
        assert sorted(len(r) for r in results) == [0, 0, len(available_migrations())]
        assert scalar(url, "SELECT count(*) FROM zart_tasks") == 0
    finally:
        _drop_database(server_url, name)


def test_demo_runs_on_the_embedded_database(tmp_path, subprocess_env):
    env = dict(subprocess_env, ZART_EMBEDDED_DIR=str(tmp_path / "pgdata"))
    env.pop("ZART_DATABASE_URL")
    result = run_cli("demo", "--runs", "60", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and "60" in result.stdout
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def test_without_a_url_or_the_embedded_extra_the_message_says_what_to_do(subprocess_env, tmp_path):
    env = dict(subprocess_env)
    env.pop("ZART_DATABASE_URL")
    # Simulate an install without the `embedded` extra: importing pgserver fails.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['pgserver'] = None\n")
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    result = run_cli("status", "anything", env=env)
    assert result.returncode == 1
    assert "set ZART_DATABASE_URL" in result.stderr and "zart[embedded]" in result.stderr


def test_public_api_is_what_the_contract_names():
    for name in (
        "workflow",
        "step",
        "start",
        "astart",
        "get",
        "context",
        "Worker",
        "SerializationError",
        "NonDeterminismError",
        "StepFailed",
        "WorkflowFailed",
    ):
        assert hasattr(zart, name), name


def test_the_public_api_is_imported_on_first_use():
    """`import zart` and the `zart` command import the engine (psycopg, trio, croniter) only when a
    name of it is used (PEP 562); every public name resolves, and dir() lists them all."""
    heavy = ("psycopg", "trio", "croniter", "zart.client", "zart.worker")
    code = (
        "import sys, zart, zart.cli\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
        "from zart import Worker, workflow\n"
        "assert zart.Worker is Worker and zart.workflow is workflow and Worker.__module__ == 'zart.worker'\n"
        "assert all(getattr(zart, name) is not None for name in zart.__all__)\n"
        "assert set(zart.__all__) <= set(dir(zart))\n"
        "try:\n    zart.no_such_name\nexcept AttributeError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "module 'zart' has no attribute 'no_such_name'"]


def test_the_cli_names_the_engines_constants():
    """The CLI's options spell out the database URL's variable (zart.db imports psycopg, which the
    CLI imports only when a command runs); the statuses come from zart.sql, as the client's do."""
    from zart import cli, client, db

    assert cli.ENV_URL == db.ENV_URL
    assert cli.STATUSES is client.STATUSES


@pytest.mark.parametrize("command", ["worker", "supervise"])
def test_worker_processes_set_their_garbage_collector(database_url, subprocess_env, command):
    """`zart worker` and each process of `zart supervise` freeze what the apps' import made and
    collect young objects less often (zart.worker.tune_gc); a Worker in a thread of the caller's
    process leaves the caller's collector alone."""
    from zart.worker import GC_THRESHOLDS

    process = (
        WorkerProcess(subprocess_env)
        if command == "worker"
        else SupervisorProcess(subprocess_env, "--procs", "1", app="tests.apps.core_app")
    )
    try:
        process.wait_started()
        handle = zart.start(core_app.gc_settings_of_the_worker, database_url=database_url)
        thresholds, frozen = handle.result(timeout=30)
    finally:
        process.stop()
    assert tuple(thresholds) == GC_THRESHOLDS
    assert frozen > 1000  # the modules, functions and classes imported before the worker ran

    before = (gc.get_threshold(), gc.get_freeze_count())
    with zart.Worker(database_url):
        pass
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_the_public_names_are_listed_alike_in_all_three_places():
    """zart/__init__.py spells the public API three times: imports for type checkers, `__all__`, and
    where each name is imported from on first use (`_WHERE`). They must name the same things, from
    the same modules."""
    import ast

    import zart

    tree = ast.parse((REPO_ROOT / "zart" / "__init__.py").read_text())
    checking = next(node for node in tree.body if isinstance(node, ast.If))  # `if TYPE_CHECKING:`
    imported = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in checking.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    where = {name: (place, name) if isinstance(place, str) else place for name, place in zart._WHERE.items()}
    assert imported == where
    assert set(zart.__all__) == set(where) | {"__version__"}
