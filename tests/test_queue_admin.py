"""Queues for operators: `zart queues`, `zart queues set`, `zart start --queue ...`, and the HTTP API's
start options, batch start and `GET /v1/queues`.

The CLI runs as real subprocesses and the API as a real `zart serve`; counts are checked against the
database, and a limit changed by `zart queues set` is seen to bind on a running worker.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

import zart
from zart import sql
from zart.http.validation import MAX_BATCH
from zart.queue_admin import QueueInfo, queue_stats

from .apps import queue_admin_app
from .conftest import _create_database, _drop_database
from .helpers import REPO_ROOT, query, run_cli, scalar, wait_until, zart_command
from .test_cli import _ok, _one_line_error
from .test_http import ServeProcess, check, server_env
from .test_query_plans import explain


def stats(url: str, name: str) -> QueueInfo:
    return next(info for info in queue_stats(database_url=url) if info.name == name)


def cli(url: str, *args: str) -> Any:
    return run_cli(*args, "--database-url", url)


# -- zart queues: the counts are the database's --------------------------------------------------------


def test_queues_shows_the_backlog_of_a_queue_nobody_runs(fresh_database_url):
    url = fresh_database_url
    ready = zart.start_many(queue_admin_app.gate, list(range(5)), queue="qa-counted", database_url=url)
    delayed = zart.start_many(
        queue_admin_app.gate, [7, 8, 9], queue="qa-counted", delay="1h", database_url=url
    )
    assert all(h.created for h in ready + delayed)
    oldest = (
        "SELECT extract(epoch FROM now() - min(run_at))::float8 FROM zart_tasks WHERE queue = 'qa-counted'"
    )
    before = scalar(url, oldest + " AND run_at <= now()")

    listed = {q["name"]: q for q in orjson.loads(_ok(cli(url, "queues", "--json")))}
    after = scalar(url, oldest + " AND run_at <= now()")
    counted = listed["qa-counted"]
    assert {k: v for k, v in counted.items() if k != "oldest_ready_seconds"} == {
        "name": "qa-counted",
        "concurrency": 2,
        "per_key": None,
        "rate": None,
        "overridden": False,
        "ready": 5,
        "in_progress": 0,
        "delayed": 3,
    }
    assert before <= counted["oldest_ready_seconds"] <= after
    assert listed["default"]["ready"] == listed["default"]["delayed"] == 0
    # The same numbers as the database's own count, queue by queue.
    by_queue = dict(
        query(url, "SELECT queue, count(*) FROM zart_tasks WHERE NOT admitted AND run_at <= now() GROUP BY 1")
    )
    assert {name: q["ready"] for name, q in listed.items() if q["ready"]} == by_queue

    table = _ok(cli(url, "queues"))
    lines = table.splitlines()
    assert re.fullmatch(
        r"queue\s+concurrency\s+per key\s+rate\s+overridden\s+ready\s+in progress\s+delayed\s+oldest ready",
        lines[0],
    )
    assert re.search(r"^default\s+-\s+-\s+-\s+no\s+0\s+0\s+0\s+-$", table, re.M), table
    assert re.search(r"^qa-counted\s+2\s+-\s+-\s+no\s+5\s+0\s+3\s+(\d+ms|\d+\.\d\ds)$", table, re.M), table


# -- zart queues set --------------------------------------------------------------------------------------


def _row(url: str, name: str) -> tuple[Any, ...]:
    return query(
        url,
        "SELECT concurrency, per_key, rate_limit, rate_period, overridden, version FROM zart_queues"
        " WHERE name = %s",
        (name,),
    )[0]


def test_queues_set_changes_only_the_limits_given_and_creates_a_queue(fresh_database_url):
    url = fresh_database_url
    shown = _ok(
        cli(url, "queues", "set", "qa-made", "--concurrency", "5", "--per-key", "2", "--rate", "10/1m")
    )
    assert re.search(r"^qa-made\s+5\s+2\s+10/60s\s+yes\s+0\s+0\s+0\s+-$", shown, re.M), shown
    assert shown.splitlines()[-1] == (
        "every worker applies these limits from its next claim; they hold, whatever the code declares, "
        "until `zart queues set qa-made --reset`"
    )
    concurrency, per_key, rate_limit, rate_period, overridden, version = _row(url, "qa-made")
    assert (concurrency, per_key, rate_limit, rate_period, overridden) == (5, 2, 10, 60.0, True)

    # `none` clears one limit; the others stay; every change bumps the version (claims in flight skip).
    cleared = orjson.loads(_ok(cli(url, "queues", "set", "qa-made", "--concurrency", "none", "--json")))
    assert cleared == {
        "name": "qa-made",
        "concurrency": None,
        "per_key": 2,
        "rate": "10/60s",
        "overridden": True,
        "ready": 0,
        "in_progress": 0,
        "delayed": 0,
        "oldest_ready_seconds": None,
    }
    assert _row(url, "qa-made") == (None, 2, 10, 60.0, True, version + 1)
    _ok(cli(url, "queues", "set", "qa-made", "--rate", "none", "--per-key", "none"))
    assert _row(url, "qa-made")[:5] == (None, None, None, None, True)

    # With no limit, `set` only makes sure the queue exists: then a start may name it.
    with pytest.raises(zart.UnknownQueue):
        zart.start(queue_admin_app.gate, None, queue="qa-plain", database_url=url)
    _ok(cli(url, "queues", "set", "qa-plain"))
    assert _row(url, "qa-plain") == (None, None, None, None, False, 0)
    zart.start(queue_admin_app.gate, None, queue="qa-plain", database_url=url)
    assert stats(url, "qa-plain").ready == 1


def test_an_override_outlives_a_worker_start_until_reset(fresh_database_url, monkeypatch):
    """Workers register the limits declared in code, except over an operator's; --reset gives the
    queue back to the code, whose limits return when a worker next starts."""
    url = fresh_database_url
    with zart.Worker(url, poll_interval="30s"):
        pass
    assert _row(url, "qa-declared")[:5] == (1, None, 5, 1.0, False)

    _ok(cli(url, "queues", "set", "qa-declared", "--concurrency", "4", "--rate", "none"))
    with zart.Worker(url, poll_interval="30s"):
        pass
    assert _row(url, "qa-declared")[:5] == (4, None, None, None, True)  # the override held

    reset = _ok(cli(url, "queues", "set", "qa-declared", "--reset"))
    assert re.search(r"^qa-declared\s+4\s+-\s+-\s+no\s", reset, re.M), reset
    assert "follows the code again" in reset.splitlines()[-1]
    with zart.Worker(url, poll_interval="30s"):
        pass
    assert _row(url, "qa-declared")[:5] == (1, None, 5, 1.0, False)  # as declared in code


# -- a changed limit binds on a running worker, without a restart ----------------------------------------


def test_holding_and_raising_a_limit_takes_effect_on_a_running_worker(fresh_database_url):
    """qa-single runs one at a time, as declared. `zart queues set --concurrency 0` holds it: the one
    in progress finishes, nothing else begins. `--concurrency 3` then lets three run at once, on the
    worker already running, without waiting for its 30 s poll: the change wakes it."""
    url = fresh_database_url
    notify = f"SELECT pg_notify('{sql.TASKS_CHANNEL}', '')"
    with zart.Worker(url, concurrency=8, lease="5s", poll_interval="30s") as worker:
        handles = zart.start_many(queue_admin_app.gate, list(range(5)), database_url=url)
        first = wait_until(
            lambda: [h for h in handles if h.status() == "waiting"], 10, what="the first to begin"
        )
        assert len(first) == 1

        def one_more_round() -> None:
            """Wake the worker until a claim has begun after a whole one: it had its chance to admit
            more (the count goes up as a claim begins, and claims run one after the other)."""
            before = worker.claim_queries
            for n in (1, 2):
                scalar(url, notify)
                wait_until(lambda n=n: worker.claim_queries >= before + n, 10, what="another claim round")

        one_more_round()
        assert (stats(url, "qa-single").in_progress, stats(url, "qa-single").ready) == (1, 4)

        _ok(cli(url, "queues", "set", "qa-single", "--concurrency", "0"))
        zart.send_event(first[0].id, "qa-go", database_url=url)
        first[0].result(timeout=10)
        wait_until(lambda: stats(url, "qa-single").in_progress == 0, 10, what="the first to end")
        one_more_round()
        assert (stats(url, "qa-single").in_progress, stats(url, "qa-single").ready) == (0, 4)

        _ok(cli(url, "queues", "set", "qa-single", "--concurrency", "3"))
        wait_until(lambda: stats(url, "qa-single").in_progress == 3, 10, what="three in progress")
        one_more_round()
        assert (stats(url, "qa-single").in_progress, stats(url, "qa-single").ready) == (3, 1)
        table = _ok(cli(url, "queues"))
        assert re.search(r"^qa-single\s+3\s+-\s+-\s+yes\s+1\s+3\s+0\s+\S+$", table, re.M), table

        for handle in handles:
            if handle.id != first[0].id:
                zart.send_event(handle.id, "qa-go", database_url=url)
        assert sorted(h.result(timeout=20) for h in handles) == list(range(5))


# -- bad input on the command line -----------------------------------------------------------------------


CLI_BAD_INPUT: list[tuple[list[str], str]] = [
    (
        ["queues", "set", "qa-bad", "--rate", "100 per s"],
        "invalid rate of queue 'qa-bad' '100 per s': a rate is 'N/PERIOD' with N >= 1",
    ),
    (["queues", "set", "qa-bad", "--rate", "0/1s"], "N must be between 1 and 2147483647"),
    (["queues", "set", "qa-bad", "--rate", "-1/1s"], "invalid rate of queue 'qa-bad' '-1/1s'"),
    (
        ["queues", "set", "qa-bad", "--concurrency", "-1"],
        "concurrency of queue 'qa-bad' must be between 0 and 2147483647, got -1",
    ),
    (
        ["queues", "set", "qa-bad", "--concurrency", "ten"],
        "--concurrency must be a whole number or 'none'",
    ),
    (["queues", "set", "qa-bad", "--per-key", "0"], "per_key of queue 'qa-bad' must be between 1"),
    (
        ["queues", "set", "qa-bad", "--reset", "--rate", "1/1s"],
        "--reset cannot be combined with --concurrency, --per-key or --rate",
    ),
    (["queues", "set", "qa-nobody-made-this", "--reset"], "unknown queue 'qa-nobody-made-this'"),
    (["queues", "set", "bad\tname", "--concurrency", "1"], "contains control characters"),
    (
        ["start", "qa-gate", "--app", "tests.apps.queue_admin_app", "--queue", "qa-nowhere"],
        "unknown queue 'qa-nowhere'; known queues: ",
    ),
    (
        ["start", "qa-gate", "--app", "tests.apps.queue_admin_app", "--priority", "high"],
        "--priority must",
    ),
    (["start", "qa-gate", "--app", "tests.apps.queue_admin_app", "--delay", "soon"], "invalid --delay"),
]


def test_bad_input_is_one_line_and_changes_nothing(database_url):
    """Every case fails with one `zart: error:` line and exit 1, and writes nothing. The commands run
    at the same time (each is a Python start-up; the test would take seconds one after the other)."""
    before = query(database_url, "SELECT q::text FROM zart_queues q ORDER BY name")
    runs = scalar(database_url, "SELECT count(*) FROM zart_execution_runs")
    processes = [
        subprocess.Popen(
            zart_command(*args, "--database-url", database_url),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _ in CLI_BAD_INPUT
    ]
    for process, (args, message) in zip(processes, CLI_BAD_INPUT, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        assert message in _one_line_error(result), (args, stderr)
    assert query(database_url, "SELECT q::text FROM zart_queues q ORDER BY name") == before
    assert scalar(database_url, "SELECT count(*) FROM zart_execution_runs") == runs


def test_start_with_queue_key_priority_and_delay(database_url):
    execution_id = _ok(
        cli(
            database_url,
            "start",
            "qa-gate",
            "--app",
            "tests.apps.queue_admin_app",
            "--input",
            '"x"',
            "--queue",
            "qa-counted",
            "--key",
            "tenant-9",
            "--priority",
            "-4",
            "--delay",
            "1h",
        )
    ).strip()
    rows = query(
        database_url,
        "SELECT t.queue, t.queue_key, t.priority, t.admitted, extract(epoch FROM t.run_at - r.created_at),"
        " r.queue, r.queue_key, r.priority FROM zart_tasks t JOIN zart_execution_runs r"
        " ON r.id = t.execution_id WHERE t.execution_id = %s",
        (execution_id,),
    )
    [(queue, key, priority, admitted, delay, run_queue, run_key, run_priority)] = rows
    assert (queue, key, priority, admitted) == ("qa-counted", "tenant-9", -4, False)
    assert (run_queue, run_key, run_priority) == ("qa-counted", "tenant-9", -4)
    assert 3599 < delay < 3601
    zart.cancel(execution_id, database_url=database_url)


# -- the HTTP API -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_queues(server_url: str) -> Iterator[tuple[str, str]]:
    """`zart serve --app tests.apps.queue_admin_app` on a database of its own, with no worker, so
    that what it starts stays where it was put. (base URL, database URL)"""
    name, url = _create_database(server_url)
    try:
        zart.migrate(url)
        server = ServeProcess(server_env(url), "--app", "tests.apps.queue_admin_app")
        try:
            yield server.wait_ready(), url
        finally:
            assert server.stop() == 0, server.log()
    finally:
        from zart.pools import close_pools

        close_pools(url)
        _drop_database(server_url, name)


@pytest.fixture
def http(served_queues: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served_queues[0], timeout=30) as client:
        yield client


def _task(url: str, execution_id: str) -> tuple[Any, ...]:
    return query(
        url,
        "SELECT queue, queue_key, priority, admitted, run_at FROM zart_tasks WHERE execution_id = %s",
        (execution_id,),
    )[0]


def test_http_start_with_queue_options(served_queues, http):
    _, url = served_queues
    body = check(
        http.post(
            "/v1/executions",
            json={
                "workflow": "qa-gate",
                "id": "qa-http-1",
                "queue": "qa-http",
                "key": "tenant-1",
                "priority": -5,
                "delay": "1h",
            },
        ),
        201,
    )
    assert body == {"id": "qa-http-1", "workflow": "qa-gate", "status": "pending", "created": True}
    queue, key, priority, admitted, run_at = _task(url, "qa-http-1")
    assert (queue, key, priority, admitted) == ("qa-http", "tenant-1", -5, False)
    assert timedelta(minutes=59) < run_at - datetime.now(UTC) <= timedelta(hours=1)

    check(http.post("/v1/executions", json={"workflow": "qa-gate", "id": "qa-http-2", "delay": 90}), 201)
    assert timedelta(seconds=80) < _task(url, "qa-http-2")[4] - datetime.now(UTC) <= timedelta(seconds=90)
    at = "2031-02-03T04:05:06.5+02:00"
    check(http.post("/v1/executions", json={"workflow": "qa-gate", "id": "qa-http-3", "run_at": at}), 201)
    assert _task(url, "qa-http-3")[4] == datetime.fromisoformat(at)
    # The workflow's own queue when none is named.
    assert _task(url, "qa-http-2")[0] == "qa-single"


def test_http_batch_start_is_one_call_and_idempotent_on_ids(served_queues, http):
    _, url = served_queues
    ids = [f"qa-batch-{n}" for n in range(3)]
    request = {"workflow": "qa-gate", "inputs": [0, 1, 2], "ids": ids, "queue": "qa-http", "priority": 2}
    first = check(http.post("/v1/executions:batch", json=request), 201)
    assert first == {"executions": [{"id": i, "created": True} for i in ids]}
    # One transaction: every row was written by the same transaction.
    xmins = "SELECT count(DISTINCT xmin::text) FROM zart_execution_runs WHERE id = ANY(%s)"
    assert scalar(url, xmins, (ids,)) == 1
    assert query(
        url, "SELECT DISTINCT queue, priority FROM zart_tasks WHERE execution_id = ANY(%s)", (ids,)
    ) == [("qa-http", 2)]
    again = check(http.post("/v1/executions:batch", json=request), 200)
    assert again == {"executions": [{"id": i, "created": False} for i in ids]}
    mixed = check(
        http.post(
            "/v1/executions:batch",
            json={"workflow": "qa-gate", "inputs": [5, 6], "ids": [ids[0], "qa-batch-new"]},
        ),
        201,
    )
    assert [item["created"] for item in mixed["executions"]] == [False, True]
    fresh = check(http.post("/v1/executions:batch", json={"workflow": "qa-gate", "inputs": [None] * 4}), 201)
    assert len({item["id"] for item in fresh["executions"]}) == 4
    assert check(http.post("/v1/executions:batch", json={"workflow": "qa-gate", "inputs": []}), 200) == {
        "executions": []
    }


def test_http_get_queues_is_what_the_database_holds(served_queues, http):
    _, url = served_queues
    check(http.post("/v1/executions", json={"workflow": "qa-gate", "queue": "qa-counted"}), 201)
    listed = check(http.get("/v1/queues"), 200)["queues"]
    assert [q["name"] for q in listed] == sorted(q["name"] for q in listed)
    expected = {info.name: info for info in queue_stats(database_url=url)}
    assert {q["name"] for q in listed} == set(expected) >= {"default", "qa-counted", "qa-http"}
    for q in listed:
        info = expected[q["name"]]
        assert (q["ready"], q["in_progress"], q["delayed"]) == (info.ready, info.in_progress, info.delayed)
        assert (q["concurrency"], q["per_key"], q["rate"]) == (info.concurrency, info.per_key, info.rate)
    assert next(q for q in listed if q["name"] == "qa-counted")["ready"] >= 1
    check(http.get("/v1/queues?name=qa-http"), 422, "invalid_request")


INVALID = (422, "invalid_request")
BATCH = "/v1/executions:batch"
HTTP_BAD_INPUT: list[tuple[str, str, dict[str, Any], tuple[int, str], str]] = [
    ("unknown queue", "/v1/executions", {"queue": "qa-nowhere"}, (422, "unknown_queue"), "qa-nowhere"),
    ("queue a number", "/v1/executions", {"queue": 5}, INVALID, "queue"),
    ("queue empty", "/v1/executions", {"queue": ""}, INVALID, "queue"),
    ("queue too long", "/v1/executions", {"queue": "q" * 201}, INVALID, "queue"),
    ("key empty", "/v1/executions", {"key": ""}, INVALID, "key"),
    ("key a list", "/v1/executions", {"key": ["a"]}, INVALID, "key"),
    ("key with newline", "/v1/executions", {"key": "a\nb"}, INVALID, "key"),
    ("priority a float", "/v1/executions", {"priority": 1.5}, INVALID, "priority"),
    ("priority a boolean", "/v1/executions", {"priority": True}, INVALID, "priority"),
    ("priority a string", "/v1/executions", {"priority": "high"}, INVALID, "priority"),
    ("priority beyond int4", "/v1/executions", {"priority": 2**31}, INVALID, "priority"),
    ("delay not a duration", "/v1/executions", {"delay": "soon"}, INVALID, "delay"),
    ("delay negative", "/v1/executions", {"delay": -5}, INVALID, "delay"),
    ("delay negative text", "/v1/executions", {"delay": "-1s"}, INVALID, "delay"),
    ("delay beyond 100 years", "/v1/executions", {"delay": "100000d"}, INVALID, "delay"),
    ("delay an object", "/v1/executions", {"delay": {"s": 1}}, INVALID, "delay"),
    ("delay a boolean", "/v1/executions", {"delay": True}, INVALID, "delay"),
    ("run_at without offset", "/v1/executions", {"run_at": "2030-01-01T00:00:00"}, INVALID, "run_at"),
    ("run_at not a date", "/v1/executions", {"run_at": "tomorrow"}, INVALID, "run_at"),
    ("run_at a number", "/v1/executions", {"run_at": 1893456000}, INVALID, "run_at"),
    (
        "delay and run_at",
        "/v1/executions",
        {"delay": "1s", "run_at": "2030-01-01T00:00:00Z"},
        INVALID,
        "not both",
    ),
    ("start with inputs", "/v1/executions", {"inputs": [1]}, INVALID, "inputs"),
    ("batch without inputs", BATCH, {}, INVALID, "inputs"),
    ("batch inputs an object", BATCH, {"inputs": {"a": 1}}, INVALID, "inputs"),
    ("batch too large", BATCH, {"inputs": [None] * (MAX_BATCH + 1)}, INVALID, "at most 10000"),
    ("batch ids not a list", BATCH, {"inputs": [1], "ids": "a"}, INVALID, "'ids'"),
    ("batch ids too few", BATCH, {"inputs": [1, 2], "ids": ["qa-one"]}, INVALID, "'ids'"),
    ("batch id twice", BATCH, {"inputs": [1, 2], "ids": ["qa-twice", "qa-twice"]}, INVALID, "qa-twice"),
    ("batch id a number", BATCH, {"inputs": [1], "ids": [1]}, INVALID, "'ids' [0]"),
    ("batch id empty", BATCH, {"inputs": [1], "ids": [""]}, INVALID, "'ids' [0]"),
    ("batch with input", BATCH, {"inputs": [1], "input": 1}, INVALID, "'input'"),
    ("batch with id", BATCH, {"inputs": [1], "id": "x"}, INVALID, "'id'"),
    (
        "batch unknown queue",
        BATCH,
        {"inputs": [1], "queue": "qa-nowhere"},
        (422, "unknown_queue"),
        "qa-nowhere",
    ),
    ("batch bad priority", BATCH, {"inputs": [1], "priority": "1"}, INVALID, "priority"),
    ("batch bad delay", BATCH, {"inputs": [1], "delay": "1 hour"}, INVALID, "delay"),
    (
        "batch unknown workflow",
        BATCH,
        {"workflow": "qa-none", "inputs": [1]},
        (422, "unknown_workflow"),
        "qa-none",
    ),
    ("batch input with NUL", BATCH, {"inputs": ["a\u0000"]}, INVALID, "NUL"),
    ("batch without workflow", BATCH, {"workflow": None, "inputs": [1]}, INVALID, "workflow"),
]


@pytest.mark.parametrize(
    ("name", "path", "fields", "expected", "mentions"), HTTP_BAD_INPUT, ids=[c[0] for c in HTTP_BAD_INPUT]
)
def test_http_bad_start_options_are_refused_with_nothing_written(
    served_queues, http, name, path, fields, expected, mentions
):
    """Each is refused with the error shape and its status, names what is wrong, and writes nothing."""
    _, url = served_queues
    body = {"workflow": "qa-gate", **fields}
    if body["workflow"] is None:
        del body["workflow"]
    before = scalar(url, "SELECT count(*) FROM zart_execution_runs")
    error = check(http.post(path, json=body), *expected)["error"]
    assert scalar(url, "SELECT count(*) FROM zart_execution_runs") == before, name
    assert mentions in error["message"], error


# -- the statement's plan --------------------------------------------------------------------------------


def test_queue_stats_reads_the_partial_indexes_only(fresh_database_url):
    """With 40,000 tasks of begun executions and a backlog of 10,000, the statement never scans
    zart_tasks: each count is a range of one partial index."""
    url = fresh_database_url
    statements = [
        """INSERT INTO zart_tasks (execution_id, kind, queue, run_at)
           SELECT 'parked-' || g, 'workflow', 'default', 'infinity' FROM generate_series(1, 20000) g""",
        """INSERT INTO zart_tasks (execution_id, kind, step_key, run_at, grp, seq)
           SELECT 'map-' || (g % 500), 'step', 'item[' || g || ']', 'infinity', 0, g
           FROM generate_series(1, 20000) g""",
        """INSERT INTO zart_tasks (execution_id, kind, queue, admitted, run_at)
           SELECT 'queued-' || g, 'workflow', 'default', false, now() + make_interval(secs => g % 7 - 3)
           FROM generate_series(1, 10000) g""",
        "VACUUM ANALYZE zart_tasks",
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    for generic in (False, True):
        nodes, _ = explain(url, sql.QUEUE_STATS, {"name": None}, generic)
        scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
        assert not [s for s in scans if s[0] == "Seq Scan" and s[1] == "zart_tasks"], scans
        used = {s[2] for s in scans if s[2]}
        # Waiting tasks: either partial index of them (both lead with the queue); slots: the other.
        assert used & {"zart_tasks_queued_idx", "zart_tasks_queued_keys_idx"}, scans
        assert "zart_tasks_in_progress_idx" in used, scans
    info = stats(url, "default")
    assert info.ready + info.delayed == 10000 and info.in_progress == 20000
