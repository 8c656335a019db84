"""The operator CLI: list, show, cancel, start --wait, send-event, demo, and every error path.

Commands run as real subprocesses (`python -m zart ...`) against the session's database; the
executions they look at are run by an in-process worker.
"""

from __future__ import annotations

import re
import uuid

import orjson
import pytest

import zart
from examples import order_fulfillment

from .apps import core_app, events_app, retry_app
from .helpers import run_cli, wait_until

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def _ok(result) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def _one_line_error(result) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zart: error: ")
    return lines[0]


def _positions(text: str, patterns: list[str]) -> list[int]:
    """The line index of the first line matching each pattern (searched from the previous match on)."""
    lines = text.splitlines()
    found, start = [], 0
    for pattern in patterns:
        index = next((i for i in range(start, len(lines)) if re.search(pattern, lines[i])), None)
        assert index is not None, f"no line matching {pattern!r} after line {start} in:\n{text}"
        found.append(index)
        start = index + 1
    return found


# -- zart show ------------------------------------------------------------------------------------------


def test_show_has_the_retry_the_sleep_and_the_event_in_order(database_url, worker, subprocess_env):
    execution_id = f"show-{uuid.uuid4()}"
    order = {"order_id": "s1", "amount": 3.5, "items": ["cup", "saucer"]}
    handle = zart.start(
        order_fulfillment.order_fulfillment, order, id=execution_id, database_url=database_url
    )
    zart.send_event(execution_id, "shipment_ready", {"tracking_number": "T-9"}, database_url=database_url)
    assert handle.result(timeout=30)["tracking"] == "T-9"

    text = _ok(run_cli("show", execution_id, env=subprocess_env))
    header = text.split("\n\n")[0]
    assert re.search(rf"^execution\s+{execution_id}$", header, re.M)
    assert re.search(r"^workflow\s+order-fulfillment$", header, re.M)
    assert re.search(r"^status\s+completed$", header, re.M)
    assert re.search(r'^input\s+\{"order_id":"s1","amount":3.5,"items":\["cup","saucer"\]\}$', header, re.M)
    assert re.search(r'^result\s+\{"txn":', header, re.M)
    assert re.search(r"^finished\s+\S+ \S+ UTC \(took \d", header, re.M)
    _positions(
        text,
        [
            r"^#\s+entry\s+kind\s+status\s+attempts\s+at\s+took\s+details$",
            r"^1\s+validate-address#1\s+step\s+completed\s+1\s+\+",
            r"^2\s+process-payment#1\s+step\s+completed\s+2\s+\+\S+\s+\S+\s+-> \"txn-",
            r"^\s+attempt 1\s+failed\s+\+\S+\s+\S+\s+ConnectionError: payment provider timed out$",
            r"^\s+attempt 2\s+succeeded\s+\+",
            r"^3\s+sleep:warehouse-settle#1\s+sleep\s+completed\s+\+\S+\s+1\.\d\ds\s+slept 1\.00s$",
            r"^4\s+event:shipment_ready#1\s+event\s+completed\s+.*received 'shipment_ready': "
            r'\{"tracking_number":"T-9"\}$',
            r"^5\s+render-invoice#1\s+step\s+completed",
            r"^6\s+print-shipping-label#1\s+step\s+completed",
            r"^7\s+pack-order-item\[0\]\s+step\s+completed\s+1\s+.*-> 3$",
            r"^8\s+pack-order-item\[1\]\s+step\s+completed\s+1\s+.*-> 6$",
        ],
    )
    assert all(line == line.rstrip() for line in text.splitlines())  # plain lines for grep and diff

    data = orjson.loads(_ok(run_cli("show", execution_id, "--json", env=subprocess_env)))
    assert (data["id"], data["workflow"], data["status"], data["input"]) == (
        execution_id,
        "order-fulfillment",
        "completed",
        order,
    )
    assert [(s["key"], s["kind"], s["status"], s["attempts"]) for s in data["steps"]][:4] == [
        ("validate-address#1", "step", "completed", 1),
        ("process-payment#1", "step", "completed", 2),
        ("sleep:warehouse-settle#1", "sleep", "completed", 0),
        ("event:shipment_ready#1", "event", "completed", 0),
    ]
    assert data["steps"][3]["result"] == {"tracking_number": "T-9"}
    payment = [a for a in data["attempts"] if a["step_key"] == "process-payment#1"]
    assert [(a["attempt"], a["outcome"], a["error_type"]) for a in payment] == [
        (1, "failed", "ConnectionError"),
        (2, "succeeded", None),
    ]
    assert payment[0]["worker_id"] == worker.worker_id


def test_show_while_sleeping_and_waiting_then_cancel(database_url, worker, subprocess_env):
    sleeping = zart.start(events_app.sleeper, {"seconds": 600}, database_url=database_url)
    waiting = zart.start(events_app.wait_for_one, {"timeout": "1h"}, database_url=database_url)
    forever = zart.start(events_app.wait_for_one, {"event": "never"}, database_url=database_url)
    for handle, status in ((sleeping, "sleeping"), (waiting, "waiting"), (forever, "waiting")):
        wait_until(lambda handle=handle, status=status: handle.status() == status, what=status)

    text = _ok(run_cli("show", sleeping.id, env=subprocess_env))
    assert re.search(r"^status\s+sleeping$", text, re.M)
    _positions(
        text,
        [
            r"^1\s+before-sleep#1\s+step\s+completed\s+1",
            r"^2\s+sleep:nap#1\s+sleep\s+waiting\s+\+\S+\s+\S+\s+"
            r"sleeping 10m00s, until \S+ \S+ UTC \(in \d+m",
        ],
    )
    text = _ok(run_cli("show", waiting.id, env=subprocess_env))
    assert re.search(
        r"^1\s+event:go#1\s+event\s+waiting\s+.*waiting for event 'go' \(timeout at \S+ \S+ UTC\)$",
        text,
        re.M,
    )
    text = _ok(run_cli("show", forever.id, env=subprocess_env))
    assert re.search(r"waiting for event 'never' \(no timeout\)$", text, re.M)

    for handle in (sleeping, waiting, forever):
        assert _ok(run_cli("cancel", handle.id, "--reason", "test over", env=subprocess_env)) == "cancelled\n"
        assert handle.status() == "cancelled"
    assert _ok(run_cli("cancel", sleeping.id, env=subprocess_env)) == "already cancelled; nothing to cancel\n"
    assert (
        _ok(run_cli("status", sleeping.id, env=subprocess_env)) == "cancelled\nerror: Cancelled: test over\n"
    )
    text = _ok(run_cli("show", sleeping.id, env=subprocess_env))
    assert re.search(r"^error\s+Cancelled: test over$", text, re.M)


def test_pause_unpause_resume_and_fork_from_the_command_line(database_url, worker, subprocess_env):
    handle = zart.start(events_app.wait_for_one, {"timeout": "1h"}, database_url=database_url)
    wait_until(lambda: handle.status() == "waiting", what="the wait")
    assert _ok(run_cli("pause", handle.id, env=subprocess_env)) == "paused\n"
    assert _ok(run_cli("pause", handle.id, env=subprocess_env)) == "already paused\n"
    assert re.search(r"^status\s+paused$", _ok(run_cli("show", handle.id, env=subprocess_env)), re.M)
    assert handle.id in _ok(run_cli("list", "--status", "paused", env=subprocess_env))
    assert _ok(run_cli("unpause", handle.id, env=subprocess_env)) == "unpaused\n"
    assert _ok(run_cli("unpause", handle.id, env=subprocess_env)) == "not paused; nothing to do\n"
    zart.send_event(handle.id, "go", "first", database_url=database_url)
    assert handle.result(timeout=30) == "first"

    forked_id = f"{handle.id}-again"
    assert _ok(
        run_cli("fork", handle.id, "--from-step", "event:go#1", "--id", forked_id, env=subprocess_env)
    ) == (f"{forked_id}\n")
    forked = zart.get(forked_id, database_url=database_url)
    wait_until(lambda: forked.status() == "waiting", what="the fork's wait")
    text = _ok(run_cli("show", forked_id, env=subprocess_env))
    assert re.search(rf"^forked from\s+{re.escape(handle.id)} at event:go#1$", text, re.M)
    assert re.search(
        rf"^forks\s+{re.escape(forked_id)}$", _ok(run_cli("show", handle.id, env=subprocess_env)), re.M
    )
    assert _ok(run_cli("cancel", forked_id, env=subprocess_env)) == "cancelled\n"
    assert _ok(run_cli("resume", forked_id, env=subprocess_env)) == "resumed\n"
    zart.send_event(forked_id, "go", "second", database_url=database_url)
    assert forked.result(timeout=30) == "second"
    assert re.search(r"^resumed\s+1 time$", _ok(run_cli("show", forked_id, env=subprocess_env)), re.M)

    # Errors: one line on stderr, a non-zero exit, nothing changed.
    for args, message in (
        (("resume", handle.id), f"cannot resume execution {handle.id!r}: it is completed"),
        (("pause", handle.id), f"cannot pause execution {handle.id!r}: it is already completed"),
        (("fork", handle.id, "--from-step", "nope#1"), "its history has no such key"),
        (("fork", handle.id, "--from-step", "7"), "its history has positions 0 to 1"),
        (("resume", "no-such-id"), "cannot resume: no execution with id 'no-such-id'"),
    ):
        result = run_cli(*args, env=subprocess_env)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_show_a_step_under_way(database_url, worker, subprocess_env, tmp_path):
    gate = tmp_path / "gate"
    handle = zart.start(core_app.gated, {"n": 2, "gate": str(gate)}, database_url=database_url)
    wait_until(lambda: any(a.step_key == "wait-for-gate#1" for a in handle.attempts()), what="the gated step")
    text = _ok(run_cli("show", handle.id, env=subprocess_env))
    assert re.search(r"^status\s+running$", text, re.M)
    _positions(
        text,
        [
            r"^1\s+add-one#1\s+step\s+completed\s+1\s+.*-> 3$",
            r"^2\s+double#1\s+step\s+completed\s+1\s+.*-> 4$",
            r"^\s+wait-for-gate#1\s+step\s+running\s+1\s+\+",
            r"^\s+attempt 1\s+running\s+\+",
        ],
    )
    gate.touch()
    assert handle.result(timeout=30) == [3, 4, "opened", 7]


def test_show_failed_steps_and_executions(database_url, worker, subprocess_env):
    retried = zart.start(retry_app.fails_after_retries, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed):
        retried.result(timeout=30)
    text = _ok(run_cli("show", retried.id, env=subprocess_env))
    assert re.search(r"^status\s+failed$", text, re.M)
    assert re.search(
        r"^error\s+StepFailed: step 'always-fails#1' failed: ValueError: the service is down$", text, re.M
    )
    _positions(
        text,
        [
            r"^1\s+always-fails#1\s+step\s+failed\s+3\s+.*ValueError: the service is down$",
            r"^\s+attempt 1\s+failed\s+.*ValueError: the service is down$",
            r"^\s+attempt 2\s+failed\s+.*ValueError: the service is down$",
            r"^\s+attempt 3\s+failed\s+.*ValueError: the service is down$",
            r"^Traceback \(most recent call last\):$",  # the workflow's traceback closes the page
        ],
    )

    failed = zart.start(core_app.fails, {"why": "shown"}, database_url=database_url)
    with pytest.raises(zart.WorkflowFailed):
        failed.result(timeout=30)
    text = _ok(run_cli("show", failed.id, env=subprocess_env))
    assert re.search(r"^error\s+RuntimeError: boom: shown$", text, re.M)
    assert "RuntimeError: boom: shown" in text.splitlines()[-1]


def test_show_an_execution_no_worker_has_taken_yet(database_url, subprocess_env):
    handle = zart.start(core_app.no_input, id=f"pending-{uuid.uuid4()}", database_url=database_url)
    try:
        text = _ok(run_cli("show", handle.id, env=subprocess_env))
        assert re.search(r"^status\s+pending$", text, re.M)
        assert text.rstrip().endswith("no steps yet")
        assert orjson.loads(_ok(run_cli("show", handle.id, "--json", env=subprocess_env)))["steps"] == []
    finally:
        zart.cancel(handle.id, database_url=database_url)


# -- zart list ------------------------------------------------------------------------------------------


def test_list_filters_and_formats(fresh_database_url, subprocess_env):
    env = dict(subprocess_env, ZART_DATABASE_URL=fresh_database_url)
    ids = [
        zart.start(core_app.three_steps, {"n": n}, id=f"list-{n}", database_url=fresh_database_url).id
        for n in range(3)
    ]
    zart.start(core_app.no_input, id="list-other", database_url=fresh_database_url)
    zart.cancel("list-1", database_url=fresh_database_url)

    lines = _ok(run_cli("list", env=env)).splitlines()
    assert re.fullmatch(r"id\s+workflow\s+status\s+created\s+took", lines[0])
    assert set(lines[1]) == {"─"}
    rows = [line.split() for line in lines[2:]]
    assert [row[:3] for row in rows] == [  # newest first
        ["list-other", "no-input", "pending"],
        ["list-2", "three-steps", "pending"],
        ["list-1", "three-steps", "cancelled"],
        ["list-0", "three-steps", "pending"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", row[3]) and row[5] == "UTC" for row in rows)
    assert [row[6] for row in rows] == ["-", "-", rows[2][6], "-"] and rows[2][6] != "-"

    listed = orjson.loads(_ok(run_cli("list", "--workflow", "three-steps", "--json", env=env)))
    assert [item["id"] for item in listed] == ids[::-1]
    assert set(listed[0]) == {"id", "workflow", "status", "created_at", "finished_at"}
    assert listed[1]["finished_at"] is not None and listed[0]["finished_at"] is None
    pending = orjson.loads(_ok(run_cli("list", "--status", "pending", "--limit", "2", "--json", env=env)))
    assert [item["id"] for item in pending] == ["list-other", "list-2"]
    assert _ok(run_cli("list", "--status", "completed", env=env)) == "no executions\n"
    assert orjson.loads(_ok(run_cli("list", "--status", "failed", "--json", env=env))) == []


# -- zart start --wait, zart send-event -----------------------------------------------------------------


def test_start_wait_send_event_and_their_failures(database_url, worker, subprocess_env):
    execution_id = f"cli-event-{uuid.uuid4()}"
    started = run_cli("start", "wait-for-two", "--id", execution_id, env=subprocess_env)
    assert _ok(started) == f"{execution_id}\n"

    def send(payload: str, key: str):
        return run_cli(
            "send-event", execution_id, "item", "--payload", payload, "--key", key, env=subprocess_env
        )

    assert _ok(send('{"n": 1}', "k1")) == "delivered\n"
    assert _ok(send('{"n": 1}', "k1")) == "already delivered (key 'k1')\n"  # it waits for a 2nd item
    assert _ok(send('{"n": 2}', "k2")) == "delivered\n"
    waited = run_cli(
        "start", "wait-for-two", "--id", execution_id, "--wait", "--timeout", "30", env=subprocess_env
    )
    assert orjson.loads(_ok(waited)) == [{"n": 1}, {"n": 2}]
    late = _one_line_error(run_cli("send-event", execution_id, "item", env=subprocess_env))
    assert late == (
        f"zart: error: cannot send event 'item' to execution '{execution_id}': it is already completed; "
        "the event was not stored"
    )

    failing = f"cli-fails-{uuid.uuid4()}"
    line = _one_line_error(
        run_cli("start", "fails", "--input", '{"why": "cli"}', "--id", failing, "--wait", env=subprocess_env)
    )
    assert line == f"zart: error: execution '{failing}' failed: RuntimeError: boom: cli"

    stuck = f"cli-stuck-{uuid.uuid4()}"
    line = _one_line_error(
        run_cli(
            "start",
            "wait-for-one",
            "--input",
            "{}",
            "--id",
            stuck,
            "--wait",
            "--timeout",
            "0.2",
            env=subprocess_env,
        )
    )
    assert re.fullmatch(
        rf"zart: error: execution '{stuck}' is still \w+ after 0.2 s; it goes on running", line
    )
    zart.cancel(stuck, database_url=database_url)
    line = _one_line_error(run_cli("start", "wait-for-one", "--id", stuck, "--wait", env=subprocess_env))
    assert line == f"zart: error: execution '{stuck}' was cancelled"


# -- every error path: one line on stderr, exit 1 -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "ghost"], "no execution with id 'ghost'"),
        (["status", "ghost", "--json"], "no execution with id 'ghost'"),
        (["show", "ghost"], "no execution with id 'ghost'"),
        (["show", "ghost", "--json"], "no execution with id 'ghost'"),
        (["cancel", "ghost"], "cannot cancel: no execution with id 'ghost'"),
        (["send-event", "ghost", "go"], "cannot send event 'go': no execution with id 'ghost'"),
    ],
)
def test_unknown_execution_id(subprocess_env, args, message):
    assert _one_line_error(run_cli(*args, env=subprocess_env)) == f"zart: error: {message}"


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["start", "three-steps", "--input", "{not json"], "--input"),
        (["start", "three-steps", "--input", ""], "--input"),
        (["send-event", "ghost", "go", "--payload", "[1,"], "--payload"),
    ],
)
def test_bad_json(subprocess_env, database_url, args, what):
    line = _one_line_error(run_cli(*args, env=subprocess_env))
    assert line.startswith(f"zart: error: {what} is not valid JSON (")


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["list"],
        ["list", "--json"],
        ["status", "x"],
        ["show", "x"],
        ["cancel", "x"],
        ["send-event", "x", "go"],
        ["start", "three-steps"],
        ["prune", "--older-than", "30d"],
        ["demo", "--runs", "1"],
    ],
)
def test_unreachable_database(subprocess_env, args):
    # `zart worker` and `zart supervise` wait for an unreachable database instead: see test_outage.py.
    line = _one_line_error(run_cli(*args, "--database-url", UNREACHABLE, env=subprocess_env))
    assert line.startswith(
        "zart: error: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/nowhere"
    )


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["prune", "--older-than", "30"], "--older-than '30'"),
        (["prune", "--older-than", "soon"], "--older-than 'soon'"),
        (["worker", "--lease", "3x"], "lease '3x'"),
        (["worker", "--poll-interval", "0s"], "poll interval '0s'"),
        (["supervise", "--grace", "1 week"], "--grace '1 week'"),
    ],
)
def test_bad_duration(subprocess_env, args, what):
    line = _one_line_error(run_cli(*args, env=subprocess_env))
    assert line.startswith(f"zart: error: invalid {what}")
    assert "250ms, 2s, 1.5s, 5m, 1h, 1d" in line


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--status", "done"],
        ["list", "--limit", "0"],
        ["show"],
        ["cancel"],
        ["send-event", "x"],
        ["demo", "--runs", "0"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(subprocess_env, args):
    result = run_cli(*args, env=subprocess_env)
    assert result.returncode == 2, result
    assert result.stdout == "" and "Usage: " in result.stderr and "Error: " in result.stderr


def test_every_command_is_listed_with_its_help():
    listing = _ok(run_cli("--help"))
    for command in ("migrate", "worker", "supervise", "start", "send-event", "status", "show", "list"):
        assert re.search(rf"^  {command}\s", listing, re.M), command
    for command in ("cancel", "prune", "demo", "replay-check"):
        assert re.search(rf"^  {command}\s", listing, re.M), command
        assert _ok(run_cli(command, "--help")).startswith(f"Usage: python -m zart {command} ")


# -- zart demo ------------------------------------------------------------------------------------------


def test_demo_runs_100_orders_on_the_embedded_database(tmp_path, subprocess_env):
    env = dict(subprocess_env, ZART_EMBEDDED_DIR=str(tmp_path / "pgdata"))
    env.pop("ZART_DATABASE_URL")
    text = _ok(run_cli("demo", "--runs", "100", env=env, timeout=240))
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    summary = dict(re.findall(r"^│ ([a-z/ ]+?)\s+│\s+([\d.]+) │$", text, re.M))
    assert summary["runs"] == "100" and summary["completed"] == "100" and summary["failed"] == "0"
    assert summary["worker processes"] == "2"
    assert summary["events delivered"] == "100" and summary["sleeps"] == "100"
    assert summary["retries"] == "10"  # one order in ten has its payment retried once
    assert int(summary["steps"]) == 599
    assert float(summary["workflows/s"]) > 0 and float(summary["steps/s"]) > 0
    assert "order-fulfillment" in text and "100/100" in text  # the progress bar's last state


# -- zart schedules ---------------------------------------------------------------------------------------


def test_schedules_list_pause_resume(fresh_database_url, subprocess_env):
    env = dict(subprocess_env, ZART_DATABASE_URL=fresh_database_url)
    zart.schedule(
        "nightly-report",
        "0 3 * * *",
        core_app.three_steps,
        {"n": 1},
        timezone="Europe/Berlin",
        database_url=fresh_database_url,
    )
    lines = _ok(run_cli("schedules", env=env)).splitlines()
    assert re.fullmatch(
        r"schedule\s+cron\s+timezone\s+catch up\s+next firing\s+last execution\s+paused", lines[0]
    )
    assert lines[2].split()[0] == "nightly-report" and lines[2].split()[-2:] == ["-", "no"]
    assert "0 3 * * *" in lines[2] and "Europe/Berlin" in lines[2]

    assert _ok(run_cli("schedules", "pause", "nightly-report", env=env)).strip() == (
        "schedule 'nightly-report' paused"
    )
    [listed] = orjson.loads(_ok(run_cli("schedules", "--json", env=env)))
    assert listed["paused"] is True and listed["cron"] == "0 3 * * *" and listed["workflow"] == "three-steps"
    assert listed["next_fire_at"].endswith("+00:00")
    assert "resumed" in _ok(run_cli("schedules", "resume", "nightly-report", env=env))
    assert zart.list_schedules(database_url=fresh_database_url)[0].paused is False

    missing = run_cli("schedules", "pause", "no-such-schedule", env=env)
    assert missing.returncode != 0 and "no schedule named 'no-such-schedule'" in missing.stderr
