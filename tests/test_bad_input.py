"""Acceptance 5: bad input gets a clear error naming the problem, and nothing is stored half-way."""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid

import attrs
import pytest

import zart
from zart import serde

from .apps import core_app
from .helpers import run_cli, scalar

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def _count_runs(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM zart_execution_runs") + scalar(
        url, "SELECT count(*) FROM zart_tasks"
    )


def test_unknown_workflow_lists_the_known_ones(database_url):
    before = _count_runs(database_url)
    with pytest.raises(zart.UnknownWorkflow) as error:
        zart.start("no-such-workflow", {}, database_url=database_url)
    message = str(error.value)
    assert "unknown workflow 'no-such-workflow'" in message
    assert "'three-steps'" in message  # the known ones are listed
    assert _count_runs(database_url) == before


def test_unserialisable_input_names_the_type_and_the_place(database_url):
    before = _count_runs(database_url)
    with pytest.raises(zart.SerializationError) as error:
        zart.start(core_app.three_steps, {"n": 1, "when": {object()}}, database_url=database_url)
    message = str(error.value)
    assert "'set'" in message and "the input of workflow 'three-steps'" in message
    assert _count_runs(database_url) == before


def test_supported_values_round_trip(database_url):
    handle = zart.start(
        core_app.no_input,
        {"at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), "id": uuid.UUID(int=7)},
        database_url=database_url,
    )
    assert handle.info().input == {
        "at": "2026-01-02T03:04:05+00:00",
        "id": "00000000-0000-0000-0000-000000000007",
    }


def test_unserialisable_step_argument_fails_the_execution_with_a_clear_error(database_url, worker):
    handle = zart.start(core_app.bad_step_argument, {}, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failure:
        handle.result(timeout=30)
    assert failure.value.error_type == "SerializationError"
    assert "'object'" in failure.value.message and "argument 1 of step 'observe#1'" in failure.value.message
    assert (
        scalar(database_url, "SELECT count(*) FROM test_effects WHERE execution_id = %s", (handle.id,)) == 0
    )


def test_unserialisable_workflow_result_fails_the_execution(database_url, worker):
    handle = zart.start(core_app.bad_result, {}, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed, match="the result of workflow 'bad-result'"):
        handle.result(timeout=30)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (float("nan"), "cannot serialise NaN passed as the input of workflow 'three-steps':"),
        (
            {"n": [1, float("inf")]},
            "cannot serialise infinity passed as the input of workflow 'three-steps' (at n[1])",
        ),
        (
            {"n": -float("inf")},
            "cannot serialise -infinity passed as the input of workflow 'three-steps' (at n)",
        ),
        (
            {"n": 2**64},
            "an integer beyond 64 bits (20 digits) passed as the input of workflow 'three-steps' (at n)",
        ),
        ({"n": -(2**63) - 1}, "an integer beyond 64 bits (19 digits) passed as the input"),
    ],
)
def test_values_that_would_change_are_refused_naming_the_place(database_url, value, named):
    # orjson would store NaN and the infinities as null; integers beyond 64 bits do not fit its numbers.
    before = _count_runs(database_url)
    with pytest.raises(zart.SerializationError) as error:
        zart.start(core_app.three_steps, value, database_url=database_url)
    assert named in str(error.value)
    assert _count_runs(database_url) == before


def test_serde_refuses_non_finite_numbers_everywhere_it_looks():
    @attrs.frozen
    class Reading:
        value: float

    @dataclasses.dataclass
    class Sample:
        readings: list

    assert (
        serde.dumps({"ok": [None, 1.5, 2**64 - 1, -(2**63)]}, "x")
        == b'{"ok":[null,1.5,18446744073709551615,-9223372036854775808]}'
    )
    for value, path in [
        (Reading(float("nan")), "value"),
        (Sample([Reading(1.0), Reading(float("inf"))]), "readings[1].value"),
        ({"a b": (float("nan"),)}, "['a b'][0]"),
    ]:
        with pytest.raises(
            zart.SerializationError, match=re.escape(f"passed as the result of step 's#1' (at {path})")
        ):
            serde.dumps(value, "the result of step 's#1'")


def test_a_step_returning_nan_fails_without_retries(database_url, worker):
    handle = zart.start(core_app.nan_step_result, {}, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed) as failure:
        handle.result(timeout=30)
    assert failure.value.error_type == "StepFailed"  # the step failed: its result was refused
    assert "cannot serialise NaN passed as the result of step 'measure#1' (at ratio)" in failure.value.message
    assert [step.attempts for step in handle.steps()] == [1]


def test_existing_id_returns_the_same_execution_without_a_second_run(database_url, worker):
    execution_id = f"dup-{uuid.uuid4()}"
    first = zart.start(core_app.three_steps, {"n": 1}, id=execution_id, database_url=database_url)
    assert first.result(timeout=30)["value"] == 4
    again = zart.start(core_app.three_steps, {"n": 99}, id=execution_id, database_url=database_url)
    assert (again.id, again.created) == (execution_id, False)
    assert again.result(timeout=30)["value"] == 4  # the first run's result: nothing ran again
    assert (
        scalar(
            database_url,
            "SELECT count(*) FROM test_effects WHERE execution_id = %s",
            (execution_id,),
        )
        == 3
    )
    assert (
        scalar(
            database_url,
            "SELECT input::text FROM zart_execution_runs WHERE id = %s",
            (execution_id,),
        )
        == '{"n":1}'
    )


def test_existing_id_of_another_workflow_is_a_duplicate_execution(database_url):
    execution_id = f"dup-other-{uuid.uuid4()}"
    zart.start(core_app.three_steps, {"n": 1}, id=execution_id, database_url=database_url)
    with pytest.raises(zart.DuplicateExecution, match="already exists for workflow 'three-steps'"):
        zart.start(core_app.no_input, id=execution_id, database_url=database_url)


@pytest.mark.parametrize("bad_id", ["", "x" * 256, "line\nbreak", 42])
def test_invalid_execution_ids_are_rejected(database_url, bad_id):
    before = _count_runs(database_url)
    with pytest.raises((ValueError, TypeError), match="execution id"):
        zart.start(core_app.no_input, id=bad_id, database_url=database_url)
    assert _count_runs(database_url) == before


def test_unknown_execution_id(database_url):
    with pytest.raises(zart.ExecutionNotFound, match="no execution with id 'never-started'"):
        zart.get("never-started", database_url=database_url)


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(zart.DatabaseUnavailable, match=r"cannot connect to PostgreSQL at .*127\.0\.0\.1:1"):
        zart.start(core_app.no_input, database_url=UNREACHABLE)


def test_invalid_decorations_fail_at_import_time():
    with pytest.raises(ValueError, match="invalid timeout of workflow 'w'"):
        zart.workflow("w", timeout="soon")
    with pytest.raises(ValueError, match="non-empty name"):
        zart.step("")
    with pytest.raises(ValueError, match="without '#'"):
        zart.step("a#b")
    with pytest.raises(TypeError, match="must be an 'async def'"):
        zart.workflow("sync-workflow")(lambda payload: payload)
    with pytest.raises(ValueError, match=r"already registered by tests\.apps\.core_app\.add_one"):

        @zart.step("add-one")
        def another_add_one(x: int) -> int:
            return x


# -- the same errors through the CLI: one line on stderr, non-zero exit ---------------------------


def _one_line_error(result) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zart: error: ")
    return lines[0]


def test_cli_unknown_workflow(subprocess_env):
    line = _one_line_error(run_cli("start", "no-such-workflow", "--input", "{}", env=subprocess_env))
    assert "unknown workflow 'no-such-workflow'" in line


def test_cli_malformed_input_json(subprocess_env, database_url):
    before = _count_runs(database_url)
    line = _one_line_error(run_cli("start", "three-steps", "--input", "{not json", env=subprocess_env))
    assert "--input is not valid JSON" in line
    assert _count_runs(database_url) == before


def test_cli_unreachable_database(subprocess_env):
    line = _one_line_error(run_cli("status", "x", "--database-url", UNREACHABLE, env=subprocess_env))
    assert "cannot connect to PostgreSQL" in line


def test_cli_unknown_execution(subprocess_env):
    line = _one_line_error(run_cli("status", "never-started", env=subprocess_env))
    assert "no execution with id 'never-started'" in line


def test_cli_app_that_fails_to_import(subprocess_env):
    line = _one_line_error(run_cli("worker", "--app", "tests.apps.does_not_exist", env=subprocess_env))
    assert "cannot import app module 'tests.apps.does_not_exist'" in line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inline_fanout": -1}, "inline_fanout must be a whole number >= 0"),
        ({"inline_fanout": 2.5}, "inline_fanout must be a whole number >= 0"),
        ({"lookahead": "soon"}, "lookahead"),
    ],
)
def test_bad_worker_options_are_refused_before_anything_runs(options, message):
    with pytest.raises(ValueError, match=message):
        zart.Worker("postgresql://nowhere.invalid/zart", **options)


def test_cli_refuses_a_negative_inline_fanout(subprocess_env):
    done = run_cli("worker", "--inline-fanout", "-1", env=subprocess_env)
    assert done.returncode == 2 and "--inline-fanout" in done.stderr


def test_cli_blank_supervisor_name_is_refused_before_anything_runs(subprocess_env):
    """Checked by the option itself: nothing is migrated, no worker forked, on any database."""
    result = run_cli(
        "supervise", "--name", "  ", "--procs", "1", "--database-url", UNREACHABLE, env=subprocess_env
    )
    assert result.returncode == 2, result
    assert "Invalid value for --name: must not be empty" in result.stderr
    assert "cannot connect" not in result.stderr  # it never tried the database
